"""The outbox relay: publish committed-but-undispatched jobs, after noticing a Redis that lost
its messages (core.broker.epoch); and publish again a job whose message vanished.

Every worker and API process relays (core.lifecycle.recovery); rows are taken SKIP LOCKED,
so any number of relays split the work and never publish the same rows at once."""

from __future__ import annotations

import uuid
from typing import Any

import redis
import structlog

from core import db
from core.broker.epoch import check_broker_epoch
from core.broker.publisher import JobMessage, JobPublisher
from core.broker.queue_depth import queue_depths
from core.broker.task_names import route_for
from core.lifecycle import outbox
from core.models import Job

log = structlog.get_logger(__name__)


# The API publishes a new job right after answering; a periodic relay pass that ran in
# between would publish it too. Publishing twice is harmless (only one delivery can claim)
# but wasteful, so periodic passes only take jobs that have waited this long (seconds).
REQUEST_PUBLISH_GRACE = 2.0


def relay_undispatched(
    sessions: db.Sessions, publisher: JobPublisher, *, limit: int = 500, min_age: float = 0.0
) -> dict[str, Any]:
    """Publish committed-but-undispatched jobs."""
    with db.transaction(sessions) as session:
        jobs = outbox.lock_undispatched(session, limit=limit, min_age=min_age)
        published = _publish_in_order(publisher, jobs)
        outbox.mark_dispatched(session, job_ids=published)
    pending = len(jobs) - len(published)
    if published or pending:
        log.info("relay.pass", published=len(published), pending=pending)
    return {"published": len(published), "pending": pending}


def _publish_in_order(publisher: JobPublisher, jobs: list[Job]) -> list[uuid.UUID]:
    """Publish in pipelined batches until the first failure (the breaker then refuses the
    rest anyway); the marks are then one UPDATE for all of them."""
    return publisher.publish_many([JobMessage.of(job) for job in jobs])


def republish_lost(
    sessions: db.Sessions,
    publisher: JobPublisher,
    redis_client: redis.Redis,
    *,
    older_than: float,
    limit: int = 500,
) -> int:
    """Publish again the jobs whose message vanished (Redis eviction or failover, a worker
    that dropped a task it did not know during a rolling deploy).

    A job published ``older_than`` seconds ago and still queued is only suspect: a long
    backlog looks the same. It is republished when its queue in Redis holds fewer messages
    than there are published, unclaimed jobs for it, i.e. when messages are missing. A
    second delivery of a job whose message was not lost after all cannot claim it.
    Returns how many were republished."""
    with db.transaction(sessions) as session:
        stale = outbox.lock_stale_dispatched(session, older_than=older_than, limit=limit)
        if not stale:
            return 0
        queues = {route_for(job.kind).queue for job in stale}
        depths = queue_depths(redis_client, publisher.breaker, sorted(queues))
        expected: dict[str, int] = {}
        for kind, count in outbox.published_counts(session).items():
            queue = route_for(kind).queue
            expected[queue] = expected.get(queue, 0) + count
        short = {
            queue
            for queue, depth in depths.items()
            if depth is not None and depth < expected.get(queue, 0)
        }
        lost = [job for job in stale if route_for(job.kind).queue in short]
        republished = _publish_in_order(publisher, lost)
        outbox.mark_republished(session, job_ids=republished)
    if republished:
        log.warning("relay.republished_lost", jobs=[str(job_id) for job_id in republished])
    return len(republished)


def relay_pass(
    sessions: db.Sessions,
    publisher: JobPublisher,
    redis_client: redis.Redis,
    *,
    min_age: float = 0.0,
) -> dict[str, Any]:
    """One pass of the relay: notice a Redis that lost its
    messages (see core.broker.epoch), then publish the outbox. While Redis is unreachable or
    the breaker is open the pass stops at the first Redis call instead of locking rows.
    Periodic callers pass ``min_age=REQUEST_PUBLISH_GRACE``."""
    requeued = check_broker_epoch(redis_client, publisher.breaker, sessions)
    if requeued is None:
        return {"published": 0, "pending": None, "broker": "unavailable"}
    # Jobs a lost Redis took away are published at once, grace or not.
    relayed = relay_undispatched(sessions, publisher, min_age=0.0 if requeued else min_age)
    return {**relayed, "requeued_after_broker_reset": requeued}
