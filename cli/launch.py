"""Command lines of the processes ``conveyor`` becomes: uvicorn for the API, Celery for the
worker and Flower. They name the API factory and the Celery app by module path only, so
core never imports api or jobs."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

import structlog

from core.broker.task_names import QUEUES
from core.settings import Settings

API_APP = "api.app:create_app"
CELERY_APP = "jobs.celery_app:app"
POOLS = ("prefork", "solo", "threads")
LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
LOG_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}

log = structlog.stdlib.get_logger("conveyor.launch")


class LaunchError(Exception):
    """Settings that cannot start the process (reported without a traceback)."""


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def log_level(settings: Settings) -> str:
    """settings.log_level as Celery and uvicorn accept it (upper case here)."""
    level = settings.log_level.upper()
    level = LOG_LEVEL_ALIASES.get(level, level)
    return level if level in LOG_LEVELS else "INFO"


def api_argv(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    proxy_headers: bool = False,
) -> list[str]:
    argv = python_module(
        "uvicorn",
        "--factory",
        API_APP,
        "--host",
        host or settings.api_host,
        "--port",
        str(port if port is not None else settings.api_port),
        "--no-access-log",  # the app logs each request itself, with its request_id
        "--proxy-headers" if proxy_headers else "--no-proxy-headers",
        "--timeout-graceful-shutdown",
        "10",  # status streams would otherwise hold a shutdown forever
        "--log-level",
        log_level(settings).lower(),
    )
    if workers is not None:
        argv += ["--workers", str(workers)]
    return argv


def worker_argv(
    settings: Settings,
    *,
    queues: Sequence[str] = QUEUES,
    concurrency: int | None = None,
    hostname: str | None = None,
    pool: str = "prefork",
) -> list[str]:
    argv = python_module(
        "celery",
        "-A",
        CELERY_APP,
        "worker",
        "-Q",
        ",".join(queues),
        "-c",
        str(concurrency or settings.worker_concurrency),
        "-P",
        pool,
        "-E",
        "--without-gossip",
        "--without-mingle",
        "-l",
        log_level(settings),
    )
    if hostname:
        argv += ["-n", hostname]
    return argv


def flower_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """Flower's argv and environment. The credentials travel in FLOWER_BASIC_AUTH (the same
    as --basic-auth) so that they do not show in ``ps``."""
    user = settings.flower_user
    password = settings.flower_password.get_secret_value()
    if ":" in user or "," in user + password or not (user and password):
        raise LaunchError("CONVEYOR_FLOWER_USER/PASSWORD must be non-empty, without ',' (and ':')")
    argv = python_module(
        "celery",
        "-A",
        CELERY_APP,
        "flower",
        f"--address={settings.flower_host}",
        f"--port={settings.flower_port}",
    )
    env = {**os.environ, "FLOWER_BASIC_AUTH": f"{user}:{password}"}
    return argv, env


def become(name: str, argv: list[str], env: Mapping[str, str] | None = None) -> NoReturn:
    """Replace this process with ``argv`` (same pid, so signals reach the real server)."""
    log.info("exec", process=name, argv=argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, dict(env if env is not None else os.environ))
