"""Schema administration for the CLI: create the database if it is missing, run Alembic.

The database URL always comes from settings, never from ``alembic.ini``.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import structlog
from alembic import command
from alembic.config import Config
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from core.settings import Settings

log = structlog.stdlib.get_logger("conveyor.db_admin")

MAINTENANCE_DATABASES = ("postgres", "template1")


class SchemaError(Exception):
    """The migration environment is unusable (no alembic.ini, no database name...)."""


def project_root() -> Path:
    """The directory holding ``alembic.ini`` and ``migrations/``: the source tree this module
    lives in (a checkout or an editable install), else the working directory (an image that
    copied the sources and ran ``pip install .``)."""
    candidates = (Path(__file__).resolve().parent.parent, Path.cwd())
    for candidate in candidates:
        if (candidate / "alembic.ini").is_file() and (candidate / "migrations").is_dir():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise SchemaError(f"alembic.ini and migrations/ not found (looked in {searched})")


def alembic_config(settings: Settings) -> Config:
    root = project_root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations").replace("%", "%%"))
    config.attributes["database_url"] = settings.sqlalchemy_url
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    created = ensure_database(settings)
    if created:
        log.info("created database", database=make_url(settings.sqlalchemy_url).database)
    command.upgrade(alembic_config(settings), revision)
    log.info("database upgraded", revision=revision)


def downgrade(settings: Settings, revision: str) -> None:
    command.downgrade(alembic_config(settings), revision)
    log.info("database downgraded", revision=revision)


def ensure_database(settings: Settings) -> bool:
    """Create the configured database unless it exists; True when it was created.

    Connects to the database itself first (enough when it exists, and needs no access to
    any other database), then to a maintenance database on the same server.
    """
    url = make_url(settings.sqlalchemy_url)
    if not url.database:
        raise SchemaError("the database URL names no database")
    timeout = settings.database_connect_timeout
    try:
        psycopg.connect(_libpq(url), connect_timeout=timeout).close()
        return False
    except psycopg.OperationalError as error:
        unreachable = error
    for maintenance in MAINTENANCE_DATABASES:
        try:
            conn = psycopg.connect(
                _libpq(url.set(database=maintenance)), autocommit=True, connect_timeout=timeout
            )
        except psycopg.OperationalError:
            continue
        with conn:
            return _create_if_missing(conn, url.database)
    raise unreachable


def _create_if_missing(conn: psycopg.Connection[tuple[object, ...]], name: str) -> bool:
    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists:
        return False
    try:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.errors.DuplicateDatabase:  # another migrator won the race
        return False
    return True


def _libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
