"""The outbox relay: publish committed-but-undispatched jobs, after noticing a Redis that lost
its messages (core.broker.epoch)."""

from __future__ import annotations

import uuid
from typing import Any

import redis
import structlog

from core import db
from core.broker.epoch import check_broker_epoch
from core.broker.publisher import JobPublisher
from core.lifecycle import admission, outbox

log = structlog.get_logger(__name__)


# The API publishes a new job right after answering; a periodic relay pass that ran in
# between would publish it too. Publishing twice is harmless (only one delivery can claim)
# but wasteful, so periodic passes only take jobs that have waited this long (seconds).
REQUEST_PUBLISH_GRACE = 2.0


def relay_undispatched(
    sessions: db.Sessions, publisher: JobPublisher, *, limit: int = 500, min_age: float = 0.0
) -> dict[str, Any]:
    """Publish committed-but-undispatched jobs. Rows are locked SKIP LOCKED, so several relays
    (beat and every API process) never publish the same batch at once."""
    published: list[uuid.UUID] = []
    pending = 0
    with db.transaction(sessions) as session:
        jobs = outbox.lock_undispatched(session, limit=limit, min_age=min_age)
        for job in jobs:
            if not publisher.publish(kind=job.kind, job_id=job.id, request_id=job.request_id):
                pending = len(jobs) - len(published)
                break
            published.append(job.id)
        outbox.mark_dispatched(session, job_ids=published)
    if published or pending:
        log.info("relay.pass", published=len(published), pending=pending)
    return {"published": len(published), "pending": pending}


def relay_pass(
    sessions: db.Sessions,
    publisher: JobPublisher,
    redis_client: redis.Redis,
    *,
    min_age: float = 0.0,
    waiting_recheck_seconds: float = 10.0,
) -> dict[str, Any]:
    """One pass of the relay (beat task and API loop alike): notice a Redis that lost its
    messages (see core.broker.epoch), then publish the outbox. While Redis is unreachable or
    the breaker is open the pass stops at the first Redis call instead of locking rows.
    Periodic callers pass ``min_age=REQUEST_PUBLISH_GRACE``."""
    requeued = check_broker_epoch(redis_client, publisher.breaker, sessions)
    if requeued is None:
        return {"published": 0, "pending": None, "broker": "unavailable"}
    with db.transaction(sessions) as session:
        admission.recheck_waiting(session, older_than=waiting_recheck_seconds)
    # Jobs a lost Redis took away are published at once, grace or not.
    relayed = relay_undispatched(sessions, publisher, min_age=0.0 if requeued else min_age)
    return {**relayed, "requeued_after_broker_reset": requeued}
