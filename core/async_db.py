"""The API's hot path to PostgreSQL: psycopg 3's async pool, hand-written SQL, no ORM.

Workers and the CLI keep ``core.db`` (sync SQLAlchemy): their cost is elsewhere. The API's
submit/get/list/cancel and health answer on the event loop with one pooled connection in
autocommit mode, so a one-statement request is one round trip (no BEGIN/COMMIT, no
pre-ping: a broken connection errors, is discarded by the pool, and the request answers 503).
"""

from __future__ import annotations

import asyncio
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

# While connection attempts fail, a request waits this long for one (it starts a new attempt
# on the way) instead of the whole connect timeout: a refused database answers 503 at once,
# as the sync engine does, and the first request after PostgreSQL is back reconnects.
FAILING_WAIT_SECONDS = 0.1


class AsyncPool(AsyncConnectionPool[AsyncConnection]):
    """psycopg's pool, remembering whether its last connection attempt failed."""

    failing = False

    async def reconnect_failed(self) -> None:
        self.failing = True
        await super().reconnect_failed()


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
    pool: AsyncPool

    async def connected(_: AsyncConnection) -> None:
        pool.failing = False

    pool = AsyncPool(
        settings.libpq_url,
        kwargs=kwargs,
        min_size=min(4, max_size),
        max_size=max_size,
        open=False,
        timeout=settings.database_connect_timeout,
        configure=connected,
        # A failed connection attempt is abandoned at once instead of retried with a growing
        # back-off: the next request that needs a connection starts a new attempt, so the
        # API is back as soon as PostgreSQL is (requests meanwhile answer 503).
        reconnect_timeout=0,
        name="conveyor-api",
    )
    return pool


def _is_connection_error(error: psycopg.Error) -> bool:
    """Query-level errors (lock timeout, cancel) keep their sqlstate; a lost connection has
    none or class 08."""
    sqlstate = error.sqlstate
    return sqlstate is None or sqlstate.startswith("08")


@asynccontextmanager
async def connection(pool: AsyncPool) -> AsyncIterator[AsyncConnection]:
    """A pooled autocommit connection; an unreachable database is ``DatabaseUnavailable``."""
    try:
        async with pool.connection(timeout=FAILING_WAIT_SECONDS if pool.failing else None) as conn:
            yield conn
        # It worked: the database is there (a busy pool must not keep the short wait).
        pool.failing = False
    except PoolTimeout as error:
        raise DatabaseUnavailable() from error
    except (psycopg.OperationalError, psycopg.InterfaceError) as error:
        if not _is_connection_error(error):
            raise
        # This connection is discarded by the pool; the idle ones probably died with it
        # (a restart, a cut network): check them all now rather than fail one request each,
        # and do not let the next requests wait a whole connect timeout for a new one (the
        # first new connection that succeeds clears the flag).
        pool.failing = True
        _check_soon(pool)
        raise DatabaseUnavailable() from error


_checks: set[asyncio.Task[None]] = set()


def _check_soon(pool: AsyncPool) -> None:
    if _checks:  # one check at a time is enough
        return
    task = asyncio.get_running_loop().create_task(pool.check())
    _checks.add(task)
    task.add_done_callback(_checks.discard)


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
