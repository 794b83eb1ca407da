"""The API's hot path to PostgreSQL: psycopg 3's async pool, hand-written SQL, no ORM.

Workers and the CLI keep ``core.db`` (sync SQLAlchemy): their cost is elsewhere. The API's
submit/get/list/cancel and health answer on the event loop with one pooled connection in
autocommit mode, so a one-statement request is one round trip (no BEGIN/COMMIT, no
pre-ping: a broken connection errors, is discarded by the pool, and the request answers 503).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from opentelemetry.trace import SpanKind
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from core import tracing
from core.db import connect_args
from core.errors import DatabaseUnavailable
from core.settings import Settings

AsyncConnection = psycopg.AsyncConnection[DictRow]
AsyncPool = AsyncConnectionPool[AsyncConnection]


def make_async_pool(settings: Settings, *, max_size: int = 20) -> AsyncPool:
    """Not opened: the caller awaits ``pool.open(wait=False)`` in the app's lifespan, so the
    API starts while PostgreSQL is down (requests answer 503 until it is back)."""
    kwargs: dict[str, Any] = {
        **connect_args(settings),
        "autocommit": True,
        "row_factory": dict_row,
        # Statements of the hot path are few and repeated: prepare them server-side on the
        # second use (psycopg's default is the fifth).
        "prepare_threshold": 1,
    }
    return AsyncConnectionPool(
        settings.libpq_url,
        kwargs=kwargs,
        min_size=min(4, max_size),
        max_size=max_size,
        open=False,
        timeout=settings.database_connect_timeout,
        reconnect_timeout=0,  # keep trying to (re)connect in the background, forever
        name="conveyor-api",
    )


def _is_connection_error(error: psycopg.Error) -> bool:
    """Query-level errors (lock timeout, cancel) keep their sqlstate; a lost connection has
    none or class 08."""
    sqlstate = error.sqlstate
    return sqlstate is None or sqlstate.startswith("08")


@asynccontextmanager
async def connection(pool: AsyncPool) -> AsyncIterator[AsyncConnection]:
    """A pooled autocommit connection; an unreachable database is ``DatabaseUnavailable``."""
    try:
        async with pool.connection() as conn:
            yield conn
    except PoolTimeout as error:
        raise DatabaseUnavailable() from error
    except (psycopg.OperationalError, psycopg.InterfaceError) as error:
        if not _is_connection_error(error):
            raise
        raise DatabaseUnavailable() from error


async def execute(
    conn: AsyncConnection, name: str, sql: str, params: Mapping[str, Any] | None = None
) -> psycopg.AsyncCursor[DictRow]:
    """``conn.execute``, with a client span named ``name`` (e.g. "INSERT jobs") when tracing
    is on, as the SQLAlchemy instrumentation gives the sync paths' statements (psycopg's
    async connections are not instrumented). Parameters never go into the span."""
    if not tracing.is_configured():
        return await conn.execute(sql, params)
    with tracing.tracer.start_as_current_span(
        name, kind=SpanKind.CLIENT, attributes={"db.system": "postgresql"}
    ):
        return await conn.execute(sql, params)
