"""Dependency checks shared by the API's probes and worker diagnostics.

Each check is timed and never raises: a probe must report "down", not crash, when the thing it
probes is down.
"""

from __future__ import annotations

import time
from typing import Any

import redis
import structlog

from core import async_db
from core.broker.breaker import RedisBreaker

log = structlog.get_logger(__name__)


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


def _error_type(error: BaseException) -> str:
    """Probe answers are unauthenticated: name the error, keep hosts and users in the log."""
    cause = error.__cause__ or error
    return type(cause).__name__


def check_redis(redis_client: redis.Redis, breaker: RedisBreaker) -> dict[str, Any]:
    """PING through the breaker, so an open breaker answers "down" without touching Redis and
    a probe after ``reset_timeout`` is the half-open trial call."""
    started = time.perf_counter()
    error_text: str | None = None
    try:
        breaker.call(redis_client.ping)
        status = "up"
    except Exception as error:  # RedisError, CircuitBreakerError, ...: all mean "down"
        # Not logged: the breaker's listener logs state changes, and probes run often.
        status = "down"
        error_text = _error_type(error)
    return {
        "status": status,
        "latency_ms": _elapsed_ms(started),
        "breaker": breaker.state,
        "error": error_text,
    }


# The outbox: jobs committed but not yet published (the counters of core.lifecycle.counters),
# and the age of the oldest (the partial index's first entry).
_OUTBOX = """
SELECT
    (SELECT coalesce(sum(value), 0) FROM (
        SELECT value FROM job_counters WHERE name = 'undispatched'
        UNION ALL SELECT delta FROM job_counter_deltas WHERE name = 'undispatched'
    ) AS counted)::bigint AS undispatched,
    extract(epoch FROM now() - (
        SELECT created_at FROM jobs WHERE status = 'queued' AND dispatched_at IS NULL
        ORDER BY created_at LIMIT 1
    ))::float8 AS oldest
"""


async def check_database(
    pool: async_db.AsyncPool,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The outbox query on the async pool, timed, as the database's check:
    ({"status": "up"|"down", "latency_ms", "error"}, the outbox or None when down).
    A growing outbox age means the relay cannot publish."""
    started = time.perf_counter()
    try:
        async with async_db.connection(pool) as conn:
            cursor = await async_db.execute(conn, "SELECT job_counters", _OUTBOX)
            row = await cursor.fetchone()
    except Exception as error:  # any failure means "not usable right now"
        log.warning("health.database_down", error=_describe(error))
        return {
            "status": "down",
            "latency_ms": _elapsed_ms(started),
            "error": _error_type(error),
        }, None
    assert row is not None
    oldest = row["oldest"]
    outbox = {
        "undispatched": int(row["undispatched"]),
        "oldest_age_seconds": round(oldest, 3) if oldest is not None else None,
    }
    return {"status": "up", "latency_ms": _elapsed_ms(started), "error": None}, outbox
