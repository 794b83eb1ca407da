"""The `conveyor` command for real: the installed console script in subprocesses, against the
test PostgreSQL server (and, for `conveyor run`, the shared Redis)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet

from cli.launch import api_argv, flower_command, worker_argv
from cli.supervisor import ChildSpec, Supervisor
from core import api_keys, db, models  # noqa: F401  (models registers the tables)
from core.settings import Settings
from tests import services

CONVEYOR = Path(sys.executable).parent / "conveyor"
PEPPER = "test-pepper-" + "x" * 32


def cli_env(**overrides: str) -> dict[str, str]:
    """The caller's environment without CONVEYOR_* variables, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(CONVEYOR_ENV="test", CONVEYOR_SECRET_KEY=PEPPER, CONVEYOR_LOG_FORMAT="json")
    env.update(overrides)
    return env


def conveyor(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 60, input_text: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONVEYOR), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def public_tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {row[0] for row in rows}


def authenticate(sessions: db.Sessions, key: str) -> api_keys.Principal | None:
    with db.transaction(sessions) as session:
        return api_keys.authenticate(session, key=key, pepper=PEPPER)


# --- keys ------------------------------------------------------------------------------------


def test_keys_create_prints_a_working_key_on_the_last_line(database_url, sessions, tmp_path):
    env = cli_env(CONVEYOR_DATABASE_URL=database_url)

    result = ok(
        conveyor("keys", "create", "--name", "x", "--role", "submitter", env=env, cwd=tmp_path)
    )

    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith(api_keys.KEY_PREFIX)
    principal = authenticate(sessions, key)
    assert principal is not None
    assert (principal.name, principal.role) == ("x", api_keys.Role.submitter)


def test_keys_list_then_revoke(database_url, sessions, tmp_path):
    env = cli_env(CONVEYOR_DATABASE_URL=database_url)
    key = ok(
        conveyor("keys", "create", "--name", "ops", "--role", "operator", env=env, cwd=tmp_path)
    )
    plain = key.stdout.strip().splitlines()[-1]
    with db.transaction(sessions) as session:
        (row,) = api_keys.list_keys(session)
    listing = ok(conveyor("keys", "list", env=env, cwd=tmp_path)).stdout
    assert str(row.id) in listing
    assert "operator" in listing
    assert "active" in listing

    ok(conveyor("keys", "revoke", str(row.id), env=env, cwd=tmp_path))

    assert authenticate(sessions, plain) is None
    assert "revoked" in ok(conveyor("keys", "list", env=env, cwd=tmp_path)).stdout


def test_keys_revoke_unknown_id_fails_without_traceback(database_url, sessions, tmp_path):
    env = cli_env(CONVEYOR_DATABASE_URL=database_url)

    result = conveyor("keys", "revoke", str(uuid.uuid4()), env=env, cwd=tmp_path)

    assert result.returncode == 1
    assert "No such API key" in result.stderr
    assert "Traceback" not in result.stderr


def test_keys_create_rejects_unknown_role(tmp_path):
    result = conveyor(
        "keys", "create", "--name", "x", "--role", "root", env=cli_env(), cwd=tmp_path
    )

    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_unreachable_database_is_one_clear_line(tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{services.free_port()}/nothing"

    result = conveyor("keys", "list", env=cli_env(CONVEYOR_DATABASE_URL=url), cwd=tmp_path)

    assert result.returncode == 1
    assert "database is unavailable" in result.stderr
    assert "Traceback" not in result.stderr


# --- migrate ---------------------------------------------------------------------------------


def test_migrate_creates_database_then_upgrade_downgrade_upgrade(tmp_path):
    """Migrations: upgrade head, downgrade base, upgrade head on an empty database."""
    name = services.unique_name("conveyor_cli")
    url = services.database_url(name)  # not created: `conveyor migrate` must create it
    env = cli_env(CONVEYOR_DATABASE_URL=url)
    expected = {table.name for table in db.metadata.sorted_tables}
    assert expected
    try:
        ok(conveyor("migrate", env=env, cwd=tmp_path))
        assert public_tables(url) == expected | {"alembic_version"}

        ok(conveyor("migrate", "--downgrade", "base", env=env, cwd=tmp_path))
        assert public_tables(url) == {"alembic_version"}

        ok(conveyor("migrate", env=env, cwd=tmp_path))
        assert public_tables(url) == expected | {"alembic_version"}
        ok(conveyor("migrate", "--revision", "head", env=env, cwd=tmp_path))  # a no-op
    finally:
        services.drop_database(name)


def test_db_owner_makes_a_non_superuser_owner_of_an_existing_database(tmp_path):
    """An older setup's database, created by the administrator with a table of its own, is
    handed over to a new role with no privileges beyond owning it; migrations run as it."""
    name = services.unique_name("conveyor_owner")
    with psycopg.connect(services.ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    with services.admin_connection(name) as admin:
        admin.execute("CREATE TABLE legacy (id serial PRIMARY KEY)")
    env = cli_env(CONVEYOR_DATABASE_URL=services.owner_url(name, uuid.uuid4().hex))
    try:
        ok(conveyor("db-owner", "--admin-url", services.ADMIN_URL, env=env, cwd=tmp_path))
        ok(conveyor("db-owner", "--admin-url", services.ADMIN_URL, env=env, cwd=tmp_path))
        ok(conveyor("migrate", env=env, cwd=tmp_path))
        with services.admin_connection(name) as admin:
            role = admin.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s",
                (name,),
            ).fetchone()
            owners = admin.execute(
                "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        assert role == (False, False, False)
        assert owners == [(name,)]  # the legacy table and every migrated one
    finally:
        services.drop_database(name)


def test_migrate_refuses_a_superuser_in_production(database_url, tmp_path):
    superuser_url = services.database_url(database_url.rsplit("/", 1)[1])
    env = cli_env(
        CONVEYOR_DATABASE_URL=superuser_url,
        CONVEYOR_ENV="production",
        CONVEYOR_SECRET_KEY="s" * 40,
        CONVEYOR_FLOWER_PASSWORD="f" * 20,
        CONVEYOR_SECRETS_KEY=Fernet.generate_key().decode(),
    )

    result = conveyor("migrate", env=env, cwd=tmp_path)

    assert result.returncode == 2
    assert "refusing to migrate" in result.stderr
    assert "superuser" in result.stderr


def test_migrate_unknown_revision_is_a_usage_error(database_url, tmp_path):
    env = cli_env(CONVEYOR_DATABASE_URL=database_url)

    result = conveyor("migrate", "--revision", "nope", env=env, cwd=tmp_path)

    assert result.returncode == 2
    assert "nope" in result.stderr
    assert "Traceback" not in result.stderr


# --- settings --------------------------------------------------------------------------------


def test_production_refuses_default_secrets(tmp_path):
    env = cli_env(CONVEYOR_ENV="production")
    del env["CONVEYOR_SECRET_KEY"]

    result = conveyor("keys", "list", env=env, cwd=tmp_path)

    assert result.returncode == 2
    assert "CONVEYOR_SECRET_KEY" in result.stderr
    assert "CONVEYOR_FLOWER_PASSWORD" in result.stderr
    assert "Traceback" not in result.stderr


# --- command lines ---------------------------------------------------------------------------


def test_api_command_line():
    argv = api_argv(Settings(env="test", _env_file=None), port=9999)

    assert argv[:4] == [sys.executable, "-m", "uvicorn", "--factory"]
    assert "api.app:create_app" in argv
    assert argv[argv.index("--port") + 1] == "9999"
    assert "--no-access-log" in argv
    assert "--no-proxy-headers" in argv


def test_worker_command_line_defaults_to_every_queue():
    argv = worker_argv(Settings(env="test", worker_concurrency=3, log_level="INFO", _env_file=None))

    assert argv[1:6] == ["-m", "celery", "-A", "jobs.celery_app:app", "worker"]
    assert argv[argv.index("-Q") + 1] == "default,imports,deployments"
    assert argv[argv.index("-c") + 1] == "3"
    assert {"-E", "--without-gossip", "--without-mingle"} <= set(argv)
    assert argv[argv.index("-l") + 1] == "INFO"  # e2e tests wait for "<node> ready." at INFO


def test_flower_password_stays_off_the_command_line():
    settings = Settings(
        env="test", flower_user="admin", flower_password="s3cret-pw", _env_file=None
    )

    argv, env = flower_command(settings)

    assert not any("s3cret-pw" in arg for arg in argv)
    assert env["FLOWER_BASIC_AUTH"] == "admin:s3cret-pw"
    assert "--address=127.0.0.1" in argv


def test_flower_gets_the_broker_settings_and_nothing_else_of_ours(monkeypatch):
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "postgresql://app:dbpw-123@db/app")
    monkeypatch.setenv("CONVEYOR_SECRET_KEY", "k" * 40)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("FLOWER_URL_PREFIX", "flower")
    settings = Settings(
        env="test",
        redis_url="redis://r:6379/0",
        redis_username="app",
        redis_password="redis-pw-123",
        flower_password="flower-pw",
        _env_file=None,
    )

    _, env = flower_command(settings)

    assert env["CONVEYOR_REDIS_URL"] == "redis://r:6379/0"
    assert env["CONVEYOR_REDIS_PASSWORD"] == "redis-pw-123"
    assert env["FLOWER_URL_PREFIX"] == "flower"  # Flower's own options pass through
    assert "CONVEYOR_DATABASE_URL" not in env
    assert "CONVEYOR_SECRET_KEY" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert "dbpw-123" not in str(env)


# --- the supervisor behind `conveyor run` ----------------------------------------------------


def python_child(name: str, code: str) -> ChildSpec:
    return ChildSpec(name, (sys.executable, "-c", code))


def test_supervisor_stops_everything_when_a_child_dies():
    sleeper = python_child("sleeper", "import time; time.sleep(60)")
    stubborn = python_child(
        "stubborn",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
    )
    crasher = python_child("crasher", "import time, sys; time.sleep(0.5); sys.exit(3)")
    supervisor = Supervisor([sleeper, stubborn, crasher], stop_timeout=1, poll_interval=0.05)
    handler_before = signal.getsignal(signal.SIGTERM)

    started = time.monotonic()
    assert supervisor.run() == 1

    assert time.monotonic() - started < 10
    returncodes = {child.spec.name: child.popen.returncode for child in supervisor.children}
    assert returncodes == {"sleeper": -signal.SIGTERM, "stubborn": -signal.SIGKILL, "crasher": 3}
    assert signal.getsignal(signal.SIGTERM) is handler_before


@pytest.mark.e2e
def test_run_starts_everything_and_stops_on_sigterm(redis_url, tmp_path):
    name = services.unique_name("conveyor_run")
    api_port, flower_port = services.free_port(), services.free_port()
    env = cli_env(
        CONVEYOR_DATABASE_URL=services.database_url(name),
        CONVEYOR_REDIS_URL=redis_url,
        CONVEYOR_API_PORT=str(api_port),
        CONVEYOR_FLOWER_PORT=str(flower_port),
        CONVEYOR_FLOWER_PASSWORD="flower-pw",
        CONVEYOR_STORAGE_DIR=str(tmp_path / "var" / "storage"),
        # Every child inherits it (Flower, which gets no CONVEYOR_DATABASE_URL, too).
        TMPDIR=str(tmp_path),
    )
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(CONVEYOR), "run"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def up() -> bool:
            assert process.poll() is None, log_path.read_text()
            try:
                api = httpx.get(f"http://127.0.0.1:{api_port}/health/live", timeout=1)
                flower = httpx.get(f"http://127.0.0.1:{flower_port}/api/workers", timeout=1)
            except httpx.HTTPError:
                return False
            output = log_path.read_text()
            return (
                api.status_code == 200
                and flower.status_code == 401  # basic auth is on
                and "default@" in output
                and output.count(" ready.") >= 2
            )

        services.wait_until(up, timeout=90, message="conveyor run")
        output = log_path.read_text()
        assert "Admin API key (shown once): cvk_" in output
        key = next(
            line.rsplit(" ", 1)[-1] for line in output.splitlines() if "Admin API key" in line
        )
        flower_ok = httpx.get(
            f"http://127.0.0.1:{flower_port}/api/workers", auth=("admin", "flower-pw"), timeout=5
        )
        assert flower_ok.status_code == 200

        process.send_signal(signal.SIGTERM)
        assert process.wait(40) == 0, log_path.read_text()
        assert log_path.read_text().count(key) == 1  # shown once, never logged
        services.wait_until(
            lambda: not _processes_with(f"TMPDIR={tmp_path}\0"),
            timeout=10,
            message="children gone",
        )
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        services.drop_database(name)


def _processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment carries ``marker`` (our children)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in environ and state != "Z":
            found.append(int(proc.name))
    return found
