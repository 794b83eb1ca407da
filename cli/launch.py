"""Command lines of the processes ``conveyor`` becomes: uvicorn for the API, Celery for the
worker and Flower. They name the API factory and the Celery app by module path only, so
core never imports api or jobs."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

import structlog
from pydantic import SecretStr

from core.broker.task_names import QUEUES
from core.settings import Settings

API_APP = "api.app:create_app"
# httptools with a bound on request heads (api/http_protocol.py).
API_HTTP_PROTOCOL = "api.http_protocol:BoundedHttpToolsProtocol"
CELERY_APP = "jobs.celery_app:app"
FLOWER_APP = "jobs.flower_app:app"
# What Flower's process may see of our environment: what Python and Flower need to run.
FLOWER_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH")
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
        "--http",
        API_HTTP_PROTOCOL,
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
    # --quiet (JSON logs): no ASCII-art banner on stdout, every line is a JSON record.
    quiet = ["--quiet"] if settings.log_format == "json" else []
    argv = python_module(
        "celery",
        "-A",
        CELERY_APP,
        *quiet,
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
    as --basic-auth) so that they do not show in ``ps``.

    Flower gets only what it needs: the broker's settings and its own (FLOWER_*). No database
    URL, secret key or anything else of ours, so no page of Flower can show them."""
    user = settings.flower_user
    password = settings.flower_password.get_secret_value()
    if ":" in user or "," in user + password or not (user and password):
        raise LaunchError("CONVEYOR_FLOWER_USER/PASSWORD must be non-empty, without ',' (and ':')")
    argv = python_module(
        "celery",
        "-A",
        FLOWER_APP,
        "flower",
        f"--address={settings.flower_host}",
        f"--port={settings.flower_port}",
        # Tornado's own handler off: jobs.flower_app configures ours (JSON when asked).
        "--logging=none",
    )
    env = {
        name: value
        for name, value in os.environ.items()
        if name in FLOWER_INHERITED or name.startswith("FLOWER_")
    }
    env.update(_broker_environment(settings))
    env["FLOWER_BASIC_AUTH"] = f"{user}:{password}"
    return argv, env


def _broker_environment(settings: Settings) -> dict[str, str]:
    env = {
        "CONVEYOR_REDIS_URL": settings.redis_url,
        "CONVEYOR_REDIS_SOCKET_TIMEOUT": str(settings.redis_socket_timeout),
        "CONVEYOR_LOG_FORMAT": settings.log_format,
        "CONVEYOR_LOG_LEVEL": settings.log_level,
    }
    optional = {
        "CONVEYOR_REDIS_USERNAME": settings.redis_username,
        "CONVEYOR_REDIS_PASSWORD": settings.redis_password,
        "CONVEYOR_REDIS_SENTINELS": settings.redis_sentinels,
        "CONVEYOR_REDIS_MASTER_NAME": settings.redis_master_name,
        "CONVEYOR_REDIS_SENTINEL_PASSWORD": settings.redis_sentinel_password,
    }
    for name, value in optional.items():
        if isinstance(value, SecretStr):
            env[name] = value.get_secret_value()
        elif value is not None:
            env[name] = value
    return env


def become(name: str, argv: list[str], env: Mapping[str, str] | None = None) -> NoReturn:
    """Replace this process with ``argv`` (same pid, so signals reach the real server)."""
    log.info("exec", process=name, argv=argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, dict(env if env is not None else os.environ))
