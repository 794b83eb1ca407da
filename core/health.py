"""Dependency checks shared by the API's probes and worker diagnostics.

Each check is timed and never raises: a probe must report "down", not crash, when the thing it
probes is down.
"""

from __future__ import annotations

import time
from typing import Any

import redis
import sqlalchemy as sa
import structlog

from core import db
from core.broker.breaker import RedisBreaker
from core.lifecycle import counters

log = structlog.get_logger(__name__)


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


def _error_type(error: BaseException) -> str:
    """Probe answers are unauthenticated: name the error, keep hosts and users in the log."""
    cause = error.__cause__ or error
    return type(cause).__name__


def check_database(sessions: db.Sessions) -> dict[str, Any]:
    """``SELECT 1`` in a transaction: {"status": "up"|"down", "latency_ms", "error"}."""
    started = time.perf_counter()
    try:
        with db.transaction(sessions) as session:
            session.execute(sa.text("SELECT 1"))
    except Exception as error:  # any failure means "not usable right now"
        log.warning("health.database_down", error=_describe(error))
        return {"status": "down", "latency_ms": _elapsed_ms(started), "error": _error_type(error)}
    return {"status": "up", "latency_ms": _elapsed_ms(started), "error": None}


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


def outbox_status(sessions: db.Sessions) -> dict[str, Any]:
    """Jobs committed but not yet published; a growing age means the relay cannot publish.
    Raises DatabaseUnavailable like any other read."""
    with db.transaction(sessions) as session:
        _, count = counters.read(session)
        oldest = counters.oldest_undispatched_age(session)
    return {
        "undispatched": count,
        "oldest_age_seconds": round(oldest, 3) if oldest is not None else None,
    }
