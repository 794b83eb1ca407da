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
    check_role(settings)
    command.upgrade(alembic_config(settings), revision)
    log.info("database upgraded", revision=revision)


def downgrade(settings: Settings, revision: str) -> None:
    command.downgrade(alembic_config(settings), revision)
    log.info("database downgraded", revision=revision)


def check_role(settings: Settings) -> None:
    """Migrations run as the role that owns the tables and that the platform logs in as,
    which must not be a superuser: refused in production, a warning elsewhere."""
    url = make_url(settings.sqlalchemy_url)
    with psycopg.connect(_libpq(url), connect_timeout=settings.database_connect_timeout) as conn:
        row = conn.execute(
            "SELECT rolname, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    if row is None or not row[1]:
        return
    message = (
        f"the database role {row[0]!r} is a superuser; the platform should log in as the "
        "non-superuser role that owns its tables (scripts/setup and docker-compose.yml "
        "create one)"
    )
    if settings.env == "production":
        raise SchemaError(f"refusing to migrate: {message}")
    log.warning(message)


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


def create_owner(settings: Settings, admin_url: str) -> None:
    """Create the role of CONVEYOR_DATABASE_URL (login, no superuser, no CREATEDB/CREATEROLE)
    with its password, and its database owned by it; hand over a database and tables that
    an earlier setup created as another role. Needs an administrator's login (``admin_url``).
    A superuser role in the URL is left alone, with a warning (see ``check_role``)."""
    url = make_url(settings.sqlalchemy_url)
    role, name = url.username, url.database
    if not role or not name:
        raise SchemaError("the database URL must name a user and a database")
    admin = make_url(admin_url.replace("postgresql+psycopg://", "postgresql://", 1))
    with psycopg.connect(_libpq(admin), autocommit=True) as conn:
        found = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,))
        existing = found.fetchone()
        if existing is not None and existing[0]:
            log.warning("the database URL logs in as a superuser; not creating an owner role")
            return
        _ensure_role(conn, role, url.password, create=existing is None)
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if owner is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(role)
                )
            )
            log.info("created database", database=name, owner=role)
            return
    if owner[0] != role:
        _hand_over(admin.set(database=name), name, role)


def _ensure_role(
    conn: psycopg.Connection[tuple[object, ...]], role: str, password: str | None, *, create: bool
) -> None:
    verb = "CREATE" if create else "ALTER"
    statement = sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
        sql.SQL(verb), sql.Identifier(role)
    )
    if password:
        statement += sql.SQL(" PASSWORD {}").format(sql.Literal(password))
    conn.execute(statement)
    log.info("database role ready", role=role, created=create)


_FOREIGN_OBJECTS = """
SELECT 'TABLE', format('%%I.%%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
  AND pg_get_userbyid(c.relowner) <> %(role)s
UNION ALL
SELECT 'SEQUENCE', format('%%I.%%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'S' AND pg_get_userbyid(c.relowner) <> %(role)s
UNION ALL
SELECT 'FUNCTION', p.oid::regprocedure::text
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> %(role)s
"""


def _hand_over(admin_db: URL, name: str, role: str) -> None:
    """An existing database (and what is in its public schema) becomes the role's."""
    with psycopg.connect(_libpq(admin_db), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(name), sql.Identifier(role)
            )
        )
        objects = conn.execute(_FOREIGN_OBJECTS, {"role": role}).fetchall()
        for kind, identity in objects:
            conn.execute(
                sql.SQL("ALTER {} {} OWNER TO {}").format(
                    sql.SQL(str(kind)), sql.SQL(str(identity)), sql.Identifier(role)
                )
            )
    log.info("database handed over", database=name, owner=role, objects=len(objects))
