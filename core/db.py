"""Database plumbing: metadata, engines, and THE unit of work (``transaction``).

Store functions take a session and never commit; ``transaction`` is the only place a commit
happens, in the API and in workers alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from core.errors import DatabaseUnavailable
from core.settings import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Base(DeclarativeBase):
    metadata = metadata


def is_platform_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's ``include_object``: a table found in the database but not in the models is
    an importer's (importers create their own tables), never something to drop."""
    return not (type_ == "table" and reflected and compare_to is None)


Sessions = sessionmaker[Session]


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def connect_args(settings: Settings) -> dict[str, Any]:
    """libpq parameters for every connection: timeouts that end a stuck statement, a lock
    wait or a forgotten transaction, and TCP keepalives + a user timeout so a half-open
    connection (server gone, network cut) errors out instead of hanging a worker past its
    lease."""
    keepalive = settings.database_keepalive_seconds
    interval, count = max(1, keepalive // 3), 3
    user_timeout = keepalive * count * 1000
    options = {
        "statement_timeout": _milliseconds(settings.database_statement_timeout),
        "lock_timeout": _milliseconds(settings.database_lock_timeout),
        "idle_in_transaction_session_timeout": _milliseconds(
            settings.database_idle_in_transaction_timeout
        ),
        # The server's side of the same connection: a worker that vanished (power cut,
        # network partition) has its session ended and its locks released as quickly.
        "tcp_keepalives_idle": keepalive,
        "tcp_keepalives_interval": interval,
        "tcp_keepalives_count": count,
        "tcp_user_timeout": user_timeout,
    }
    return {
        "connect_timeout": settings.database_connect_timeout,
        "options": " ".join(f"-c {name}={value}" for name, value in options.items()),
        "keepalives": 1,
        "keepalives_idle": keepalive,
        "keepalives_interval": interval,
        "keepalives_count": count,
        "tcp_user_timeout": user_timeout,
    }


def make_engine(settings: Settings, *, pool_size: int = 5, pre_ping: bool = True) -> sa.Engine:
    """One engine per process; the caller disposes it on shutdown. ``pre_ping=False`` saves
    a round trip per checkout where every use is retried on DatabaseUnavailable anyway (a
    dead pooled connection then costs one retry, and SQLAlchemy drops the pool's others)."""
    return sa.create_engine(
        settings.sqlalchemy_url,
        # Statement parameters stay out of exception text (and so out of logs): they can be
        # secrets, keys' hashes or users' data.
        hide_parameters=True,
        pool_pre_ping=pre_ping,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=settings.database_connect_timeout,
        connect_args=connect_args(settings),
    )


def make_sessionmaker(engine: sa.Engine) -> Sessions:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: Sessions) -> Iterator[Session]:
    """Open a session, commit on success, roll back on error.

    A lost or refused connection becomes ``DatabaseUnavailable`` so every caller reports it
    the same way (a 503 in the API, a retried unit in workers).
    """
    with _unavailable_as_503(), sessions.begin() as session:
        yield session


def engine_of(sessions: Sessions) -> sa.Engine:
    """The engine a sessionmaker is bound to."""
    bind = sessions.kw["bind"]
    assert isinstance(bind, sa.Engine)
    return bind


@contextmanager
def autocommit(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A pooled connection in autocommit mode: each statement is its own transaction, so a
    one-statement write costs one round trip (no BEGIN/COMMIT). Errors are mapped like
    ``transaction``'s."""
    with _unavailable_as_503(), engine.connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")


def set_local_statement_timeout(session: Session, seconds: float) -> None:
    """A tighter statement timeout for the rest of this transaction only."""
    session.execute(sa.text(f"SET LOCAL statement_timeout = {_milliseconds(seconds)}"))


def _is_query_error(error: sa_exc.DBAPIError) -> bool:
    """OperationalError also covers query-level errors (lock timeout, cancel); keep those."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    return sqlstate is not None and not sqlstate.startswith("08")


@contextmanager
def _unavailable_as_503() -> Iterator[None]:
    """A lost, refused or hung database becomes DatabaseUnavailable (503); an error of the
    query itself (a constraint, a timeout it asked for) stays what it is."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as error:
        if (
            isinstance(error, sa_exc.DBAPIError)
            and not error.connection_invalidated
            and (_is_query_error(error))
        ):
            raise
        raise DatabaseUnavailable() from error
    except sa_exc.TimeoutError as error:  # pool exhausted while the server hangs
        raise DatabaseUnavailable() from error
