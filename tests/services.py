"""Real services for tests: a throwaway PostgreSQL database per run, owned by a throwaway
non-superuser role that the platform logs in as (as in production), private redis-servers
(optionally with a password and an ACL user), and the platform's own processes (API,
workers, Flower) started as subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import psycopg
import redis
from alembic import command
from alembic.config import Config

from core import api_keys, db
from core.api_keys import Role
from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
METRICS_TOKEN = "test-metrics-token-0123456789abcdef"
METRICS_HEADERS = {"Authorization": f"Bearer {METRICS_TOKEN}"}
ADMIN_URL = os.environ.get(
    "CONVEYOR_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], object],
    *,
    timeout: float,
    interval: float = 0.05,
    message: str = "condition",
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def database_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def create_database(name: str) -> str:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return database_url(name)


def owner_url(name: str, password: str) -> str:
    """The URL of database ``name`` as its owner role (also called ``name``)."""
    host = ADMIN_URL.rsplit("@", 1)[1].rsplit("/", 1)[0]
    return f"postgresql://{name}:{password}@{host}/{name}"


def create_owned_database(name: str) -> str:
    """A new, empty database ``name`` owned by a new role ``name`` that is no superuser and
    may create neither databases nor roles; returns the owner's URL."""
    password = uuid.uuid4().hex
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')
        conn.execute(
            f'CREATE ROLE "{name}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
            f"PASSWORD '{password}'"
        )
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
    return owner_url(name, password)


def create_migrated_database(name: str) -> str:
    """A new database ``name`` at the head migration, migrated by its owner role (not a
    superuser); returns the owner's URL, which is what the platform logs in with."""
    url = create_owned_database(name)
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url.replace("postgresql://", "postgresql+psycopg://", 1)
    command.upgrade(config, "head")
    return url


def new_api_key(
    sessions: db.Sessions,
    settings: Settings,
    role: Role = Role.submitter,
    name: str = "test",
    scopes: tuple[str, ...] = (),
) -> str:
    """Store a new API key and return its plain text."""
    with db.transaction(sessions) as session:
        _, plain = api_keys.create_key(
            session,
            name=name,
            role=role,
            pepper=settings.secret_key.get_secret_value(),
            scopes=scopes,
        )
    return plain


def drop_database(name: str) -> None:
    """Drop the database and its owner role, if it had one of its own."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')


def admin_connection(name: str) -> psycopg.Connection[tuple[object, ...]]:
    """A superuser connection to database ``name``, for tests that play the attacker or the
    database administrator (the platform itself never gets one)."""
    return psycopg.connect(database_url(name), autocommit=True)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


class RedisServer:
    """A private redis-server on a random port that a test may stop, pause or restart.

    With ``password``, the server refuses clients without credentials: the default user gets
    that password (``requirepass``) and, with ``username`` too, an ACL user of that name
    gets it as well and the default user is switched off.
    """

    def __init__(
        self,
        tmp: Path,
        *extra_args: str,
        password: str | None = None,
        username: str | None = None,
    ) -> None:
        self.port = free_port()
        self.dir = tmp
        self.extra_args = extra_args
        self.password = password
        self.username = username
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL without credentials (they are given separately, as settings allow)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _auth_args(self) -> list[str]:
        if self.password is None:
            return []
        if self.username is None:
            return ["--requirepass", self.password]
        return [
            "--user",
            "default",
            "off",
            "--user",
            self.username,
            "on",
            f">{self.password}",
            "~*",
            "&*",
            "+@all",
        ]

    def client(self) -> redis.Redis:
        return redis.Redis(
            port=self.port,
            username=self.username,
            password=self.password,
            socket_timeout=0.2,
            socket_connect_timeout=0.2,
        )

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                *self.extra_args,
                *self._auth_args(),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: _pings(self.client()), timeout=10, message="redis-server")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class Process:
    """A platform process (API, worker) in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def holds(self, lease_owner: str | None) -> bool:
        """Whether a job's lease owner (``node@host:pid:task``) is this worker."""
        argv = [str(arg) for arg in self.popen.args]  # type: ignore[union-attr]
        if "--hostname" not in argv:
            return False
        node = argv[argv.index("--hostname") + 1].split("@")[0]
        return (lease_owner or "").startswith(node + "@")

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal the process and all its children (a prefork worker's pool too)."""
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            self.kill_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_group(signal.SIGKILL)
                self.popen.wait(timeout)
        self.kill_group(signal.SIGKILL)  # leftover pool children
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


class Platform:
    """Starts Conveyor's processes against one database and one Redis, for e2e tests."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[Process] = []
        self.api_url: str | None = None

    def _spawn(
        self, name: str, argv: list[str], extra_env: dict[str, str] | None = None
    ) -> Process:
        process = Process(name, argv, {**self.env, **(extra_env or {})}, self.log_dir)
        self.processes.append(process)
        return process

    def start_api(
        self, extra_env: dict[str, str] | None = None, *, workers: int | None = None
    ) -> Process:
        port = free_port()
        argv = [str(VENV_BIN / "conveyor"), "api", "--port", str(port)]
        if workers is not None:
            argv += ["--workers", str(workers)]
        process = self._spawn("api", argv, extra_env)
        self.api_url = f"http://127.0.0.1:{port}"
        url = self.api_url

        def live() -> bool:
            if process.popen.poll() is not None:
                raise RuntimeError(f"api exited:\n{process.output()}")
            try:
                return httpx.get(f"{url}/health/live", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(live, timeout=30, message="api /health/live")
        return process

    def start_worker(
        self,
        queues: str = "default,imports",
        concurrency: int = 1,
        extra_env: dict[str, str] | None = None,
    ) -> Process:
        name = f"w{uuid.uuid4().hex[:6]}@%h"
        process = self._spawn(
            "worker",
            [
                str(VENV_BIN / "conveyor"),
                "worker",
                "--queues",
                queues,
                "--concurrency",
                str(concurrency),
                "--hostname",
                name,
            ],
            extra_env,
        )
        wait_until(lambda: _worker_ready(process), timeout=60, message="worker ready")
        return process

    def start_flower(self, extra_env: dict[str, str] | None = None) -> tuple[Process, str]:
        """Flower through ``conveyor flower`` (so with the environment it really gets);
        returns the process and its base URL once it answers."""
        port = free_port()
        env = {"CONVEYOR_FLOWER_PORT": str(port), **(extra_env or {})}
        process = self._spawn("flower", [str(VENV_BIN / "conveyor"), "flower"], env)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if process.popen.poll() is not None:
                raise RuntimeError(f"flower exited:\n{process.output()}")
            try:
                return httpx.get(f"{url}/healthcheck", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=60, message="flower /healthcheck")
        return process, url

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


def _worker_ready(process: Process) -> bool:
    if process.popen.poll() is not None:
        raise RuntimeError(f"worker exited:\n{process.output()}")
    return "ready." in process.output()


@contextmanager
def platform(env: dict[str, str], log_dir: Path) -> Iterator[Platform]:
    running = Platform(env, log_dir)
    try:
        yield running
    finally:
        running.stop_all()
