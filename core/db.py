"""Database plumbing: metadata, engines, and THE unit of work (``transaction``).

Store functions take a session and never commit; ``transaction`` is the only place a commit
happens, in the API and in workers alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from core.errors import DatabaseUnavailable

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


Sessions = sessionmaker[Session]


def make_engine(url: str, *, connect_timeout: int = 3, pool_size: int = 5) -> sa.Engine:
    """One engine per process and URL; the caller disposes it on shutdown."""
    return sa.create_engine(
        url,
        # Statement parameters stay out of exception text (and so out of logs): they can be
        # secrets, keys' hashes or users' data.
        hide_parameters=True,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=connect_timeout,
        connect_args={"connect_timeout": connect_timeout},
    )


def make_sessionmaker(engine: sa.Engine) -> Sessions:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: Sessions) -> Iterator[Session]:
    """Open a session, commit on success, roll back on error.

    A lost or refused connection becomes ``DatabaseUnavailable`` so every caller reports it
    the same way (a 503 in the API, a retried unit in workers).
    """
    try:
        with sessions.begin() as session:
            yield session
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


def _is_query_error(error: sa_exc.DBAPIError) -> bool:
    """OperationalError also covers query-level errors (lock timeout, cancel); keep those."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    return sqlstate is not None and not sqlstate.startswith("08")
