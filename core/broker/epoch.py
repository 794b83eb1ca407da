"""Noticing a Redis that lost its data, so no published job waits forever.

Our Redis keeps nothing on disk: after a restart (or a flush) the messages of jobs that were
published but not yet claimed are gone, while their rows say "queued, dispatched". A marker
key (the broker epoch) is set once per Redis lifetime; a relay pass that finds it missing
puts every such job back in the outbox first, then sets the marker, so the relay publishes
them again. Publishing twice is harmless: claiming is exclusive.

Order matters: the jobs are put back (committed) before the marker is set, so a crash in
between only means the next pass does it again. Running jobs are left alone: their lease
protects them (if their worker is gone too, the reaper puts them back).
"""

from __future__ import annotations

import socket
import time

import redis
import structlog

from core import db
from core.broker.breaker import RedisBreaker
from core.lifecycle import outbox

log = structlog.get_logger(__name__)

EPOCH_KEY = "conveyor:broker-epoch"


def _epoch_value() -> str:
    """Who started this epoch, and when: for an operator reading the key."""
    return f"{time.time():.3f} {socket.gethostname()}"


def check_broker_epoch(
    redis_client: redis.Redis, breaker: RedisBreaker, sessions: db.Sessions
) -> int | None:
    """0 when Redis still holds the epoch marker; the number of jobs put back in the outbox
    when it did not (a new epoch starts); None when Redis is unreachable or the breaker is
    open. Raises DatabaseUnavailable like any other database write."""
    try:
        if breaker.call(redis_client.exists, EPOCH_KEY):
            return 0
    except Exception:  # RedisError, CircuitBreakerError: counted and logged by the breaker
        return None
    with db.transaction(sessions) as session:
        requeued = outbox.undispatch_queued(session)
    try:
        started = breaker.call(redis_client.set, EPOCH_KEY, _epoch_value(), nx=True)
    except Exception:  # Redis went away again: the next pass repeats this, harmlessly
        return None
    report = log.warning if requeued else log.info
    report("broker.new_epoch", requeued=requeued, started_here=bool(started))
    return requeued
