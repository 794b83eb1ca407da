"""Noticing a Redis that lost its data, so no published job waits forever.

Our Redis keeps nothing on disk: after a restart (or a flush) the messages of jobs that were
published but not yet claimed are gone, while their rows say "queued, dispatched". With
Sentinel, a failover promotes a replica that may lack the last writes of the old master. A
marker key (the broker epoch) names the master that set it (its ``run_id``, new at every
start); a relay pass that finds it missing, or set by another master (a promoted replica
carries the old master's marker), puts every such job back in the outbox first, then sets
the marker, so the relay publishes them again. Publishing twice is harmless: claiming is
exclusive.

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


def _epoch_value(run_id: str) -> str:
    """The master it belongs to, then who started it and when (for an operator)."""
    return f"{run_id} {time.time():.3f} {socket.gethostname()}"


def _read(redis_client: redis.Redis) -> tuple[str | None, str]:
    """(the marker, the current master's run_id), in one round trip."""
    pipe = redis_client.pipeline(transaction=False)
    pipe.get(EPOCH_KEY)
    pipe.info("server")
    marker, info = pipe.execute()
    return (marker.decode() if marker else None), str(info["run_id"])


def check_broker_epoch(
    redis_client: redis.Redis, breaker: RedisBreaker, sessions: db.Sessions
) -> int | None:
    """0 when the master still holds its own epoch marker; the number of jobs put back in the
    outbox when it did not (a new epoch starts); None when Redis is unreachable or the
    breaker is open. Raises DatabaseUnavailable like any other database write."""
    try:
        marker, run_id = breaker.call(_read, redis_client)
    except Exception:  # RedisError, CircuitBreakerError: counted and logged by the breaker
        return None
    if marker is not None and marker.split(" ", 1)[0] == run_id:
        return 0
    with db.transaction(sessions) as session:
        requeued = outbox.undispatch_queued(session)
    try:
        breaker.call(redis_client.set, EPOCH_KEY, _epoch_value(run_id))
    except Exception:  # Redis went away again: the next pass repeats this, harmlessly
        return None
    report = log.warning if requeued else log.info
    report("broker.new_epoch", requeued=requeued, master=run_id, previous=marker)
    return requeued
