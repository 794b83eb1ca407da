"""The ``conveyor`` command: API, workers, Flower, migrations, API keys, and ``run``.

Only ``core`` is imported here. The API and the Celery app are started by module path in a
fresh interpreter (``os.execve``, see cli.launch), which keeps the import contract (core
imports neither api nor jobs) and means ``conveyor worker`` *is* the Celery worker process
(same pid, same signals).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC
from types import ModuleType

import psycopg
import structlog
from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy import exc as sa_exc

from cli import (
    deploy_client,
    import_client,
    importers,
    jobs_client,
    queues,
    schedules,
    secrets,
)
from cli.launch import (
    POOLS,
    LaunchError,
    api_argv,
    become,
    flower_command,
    python_module,
    worker_argv,
)
from cli.sessions import open_sessions
from cli.supervisor import ChildSpec, Supervisor
from core import api_keys, db
from core.broker.task_names import DEFAULT_QUEUE, DEPLOYMENTS_QUEUE, IMPORTS_QUEUE, QUEUES
from core.errors import ConveyorError
from core.lifecycle import commands
from core.logging import configure_logging
from core.settings import Settings, get_settings

log = structlog.stdlib.get_logger("conveyor.cli")

Handler = Callable[[argparse.Namespace, Settings], int]


# --- process subcommands -------------------------------------------------------------------


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    argv = api_argv(
        settings,
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=args.proxy_headers,
    )
    become("api", argv)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    argv = worker_argv(
        settings,
        queues=args.queues,
        concurrency=args.concurrency,
        hostname=args.hostname,
        pool=args.pool,
    )
    become("worker", argv)


def cmd_flower(args: argparse.Namespace, settings: Settings) -> int:
    argv, env = flower_command(settings)
    become("flower", argv, env)


def _db_admin() -> ModuleType:
    """cli.db_admin, imported by the commands that migrate only: alembic is about a second of
    every other command's start-up (``conveyor submit``, ``schedules``, ``keys``)."""
    return importlib.import_module("cli.db_admin")


def cmd_db_owner(args: argparse.Namespace, settings: Settings) -> int:
    _db_admin().create_owner(settings, args.admin_url)
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    if args.downgrade:
        _db_admin().downgrade(settings, args.downgrade)
    else:
        _db_admin().upgrade(settings, args.revision)
    return 0


# --- API keys ------------------------------------------------------------------------------


def pepper(settings: Settings) -> str:
    return settings.secret_key.get_secret_value()


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    role = api_keys.Role(args.role)
    with open_sessions(settings) as sessions, db.transaction(sessions) as session:
        row, plain = api_keys.create_key(
            session, name=args.name, role=role, pepper=pepper(settings), scopes=args.scope
        )
        key_id, scopes = row.id, list(row.scopes)
    granted = f", scopes {', '.join(scopes)}" if scopes else ""
    print(f"Created {role.value} API key {args.name!r} (id {key_id}{granted}).")
    print("Store it now; it is shown only once:")
    print(plain)
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_sessions(settings) as sessions, db.transaction(sessions) as session:
        rows = api_keys.list_keys(session)
        lines = [
            f"{row.id}  {row.role:<9}  {row.created_at.astimezone(UTC):%Y-%m-%d %H:%M}  "
            f"{'revoked' if row.revoked_at else 'active ':<7}  {row.name}"
            + (f"  [{', '.join(row.scopes)}]" if row.scopes else "")
            for row in rows
        ]
    print(f"{'ID':<36}  {'ROLE':<9}  {'CREATED (UTC)':<16}  {'STATUS':<7}  NAME")
    print("\n".join(lines) if lines else "(no API keys)")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with open_sessions(settings) as sessions, db.transaction(sessions) as session:
        row = api_keys.revoke_key(session, key_id=args.id)
        name = row.name
        stopped = (
            0
            if args.keep_jobs
            else commands.cancel_jobs_of_principal(session, principal_id=args.id)
        )
    print(f"Revoked API key {args.id} ({name!r}); {stopped} of its jobs stopped.")
    return 0


# --- run: everything on one machine --------------------------------------------------------


def ensure_admin_key(settings: Settings) -> str | None:
    """Create an "admin" key when no active admin key exists; its plain text, or None."""
    with open_sessions(settings) as sessions, db.transaction(sessions) as session:
        if api_keys.has_admin(session):
            return None
        _, plain = api_keys.create_key(
            session, name="admin", role=api_keys.Role.admin, pepper=pepper(settings)
        )
    return plain


def run_children(settings: Settings) -> list[ChildSpec]:
    def conveyor(*args: str) -> tuple[str, ...]:
        return tuple(python_module("cli.main", *args))

    queues = f"{DEFAULT_QUEUE},{IMPORTS_QUEUE}"
    return [
        ChildSpec("api", conveyor("api")),
        ChildSpec("worker-default", conveyor("worker", "-Q", queues, "-n", "default@%h")),
        ChildSpec(
            "worker-deployments",
            conveyor("worker", "-Q", DEPLOYMENTS_QUEUE, "-c", "1", "-n", "deployments@%h"),
        ),
        ChildSpec("flower", conveyor("flower")),
    ]


def print_banner(settings: Settings) -> None:
    api = f"http://{settings.api_host}:{settings.api_port}"
    flower = f"http://{settings.flower_host}:{settings.flower_port}"
    print(f"API:    {api}  (docs {api}/docs)")
    print(f"Flower: {flower}  (user {settings.flower_user!r}, CONVEYOR_FLOWER_PASSWORD)")
    print("Press Ctrl-C to stop.", flush=True)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    _db_admin().upgrade(settings)
    admin_key = ensure_admin_key(settings)
    if admin_key is not None:
        print(f"Admin API key (shown once): {admin_key}", flush=True)
    else:
        log.info("an admin API key exists; create more with `conveyor keys create`")
    supervisor = Supervisor(run_children(settings), stop_timeout=args.stop_timeout)
    supervisor.start()
    print_banner(settings)
    return supervisor.wait()


# --- argument parsing ----------------------------------------------------------------------


def queue_list(value: str) -> list[str]:
    queues = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if not queues or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown queue(s) {', '.join(unknown) or '(none)'}; known: {', '.join(QUEUES)}"
        )
    return queues


def scope(value: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_.:*-]{1,100}", value) is None:
        raise argparse.ArgumentTypeError(
            "use letters, digits and _ . : - * (e.g. imports:products)"
        )
    return value


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _add_process_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    api = sub.add_parser("api", help="run the HTTP API (uvicorn)")
    api.add_argument("--host", help="bind address (default: CONVEYOR_API_HOST)")
    api.add_argument("--port", type=int, help="port (default: CONVEYOR_API_PORT)")
    api.add_argument("--workers", type=positive_int, help="uvicorn worker processes")
    api.add_argument(
        "--proxy-headers", action="store_true", help="trust X-Forwarded-* from local proxies"
    )
    api.set_defaults(handler=cmd_api)

    worker = sub.add_parser("worker", help="run a Celery worker")
    # Deployments run on workers of their own (`-Q deployments`): an import never waits
    # behind a deployment, nor the reverse.
    worker.add_argument("-Q", "--queues", type=queue_list, default=[DEFAULT_QUEUE, IMPORTS_QUEUE])
    worker.add_argument("-c", "--concurrency", type=positive_int, help="pool size")
    worker.add_argument("-n", "--hostname", help="node name, e.g. imports@%%h")
    worker.add_argument("-P", "--pool", choices=POOLS, default="prefork")
    worker.set_defaults(handler=cmd_worker)

    flower = sub.add_parser("flower", help="run Flower (basic auth, loopback by default)")
    flower.set_defaults(handler=cmd_flower)

    run = sub.add_parser("run", help="migrate, then run everything on this machine")
    run.add_argument("--stop-timeout", type=float, default=20.0, help="seconds before SIGKILL")
    run.set_defaults(handler=cmd_run)


def _add_admin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = sub.add_parser("migrate", help="create the database if needed and migrate it")
    direction = migrate.add_mutually_exclusive_group()
    direction.add_argument("--revision", default="head", help="upgrade to (default: head)")
    direction.add_argument("--downgrade", metavar="REVISION", help="downgrade to, e.g. base")
    migrate.set_defaults(handler=cmd_migrate)

    owner = sub.add_parser(
        "db-owner",
        help="create the (non-superuser) role of CONVEYOR_DATABASE_URL and its database",
    )
    owner.add_argument(
        "--admin-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="an administrator's login, used for this only (default: %(default)s)",
    )
    owner.set_defaults(handler=cmd_db_owner)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create a key; prints it on the last line")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=[role.value for role in api_keys.Role])
    create.add_argument(
        "--scope",
        action="append",
        default=[],
        type=scope,
        help="a scope such as imports:products (repeat for more); importers name theirs",
    )
    create.set_defaults(handler=cmd_keys_create)
    keys.add_parser("list", help="list keys").set_defaults(handler=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key")
    revoke.add_argument("id", type=uuid.UUID)
    revoke.add_argument(
        "--keep-jobs", action="store_true", help="let the key's queued and running jobs run"
    )
    revoke.set_defaults(handler=cmd_keys_revoke)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conveyor",
        description="Conveyor background-job platform. Settings come from CONVEYOR_* variables.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_process_commands(sub)
    _add_admin_commands(sub)
    import_client.add_parser(sub)
    importers.add_parsers(sub)
    deploy_client.add_parser(sub)
    jobs_client.add_parser(sub)
    secrets.add_parser(sub)
    schedules.add_parser(sub)
    queues.add_parser(sub)
    return parser


# --- entry point ---------------------------------------------------------------------------


def describe_settings_error(error: ValidationError) -> str:
    lines = ["conveyor: refusing to start, invalid settings:"]
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        field = "_".join(str(part) for part in item["loc"]).upper()
        lines.append(f"  - CONVEYOR_{field}: {message}" if field else f"  - {message}")
    return "\n".join(lines)


def describe_error(error: BaseException) -> str:
    """One line: our message, then the driver's own words (without SQLAlchemy's wrapping)."""
    cause = error.__cause__ if isinstance(error, ConveyorError) else error
    if isinstance(cause, sa_exc.DBAPIError) and cause.orig is not None:
        cause = cause.orig
    detail = (str(cause).strip() or type(cause).__name__).splitlines()[0] if cause else ""
    if isinstance(cause, psycopg.errors.UndefinedTable):
        detail += " (has `conveyor migrate` run?)"
    if isinstance(error, ConveyorError):
        return f"{error.message} ({detail})" if detail else error.message
    return detail


def _refusals() -> tuple[type[Exception], ...]:
    """Errors that are a refusal to print as they are: a launch's, and the migrating
    commands'. Those modules are imported by the migrating commands only (``_db_admin``):
    a command that did not import them cannot have raised them."""
    found: list[type[Exception]] = [LaunchError]
    if (db_admin := sys.modules.get("cli.db_admin")) is not None:
        found.append(db_admin.SchemaError)
    if (alembic_errors := sys.modules.get("alembic.util.exc")) is not None:
        found.append(alembic_errors.CommandError)
    return tuple(found)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as error:
        print(describe_settings_error(error), file=sys.stderr)
        return 2
    except SettingsError as error:  # a value that is not even parseable (bad JSON)
        print(f"conveyor: refusing to start, invalid settings: {error}", file=sys.stderr)
        return 2
    configure_logging(settings)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except _refusals() as error:  # evaluated when raised: after the command's imports
        print(f"conveyor: {error}", file=sys.stderr)
        return 2
    except (ConveyorError, psycopg.Error, sa_exc.SQLAlchemyError) as error:
        print(f"conveyor: {describe_error(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
