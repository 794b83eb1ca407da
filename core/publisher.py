"""Publishing "run job X" messages: through the breaker, bounded, never blocking on a dead
broker. The job row is the outbox; ``relay_undispatched`` publishes whatever is still waiting."""

from __future__ import annotations

import uuid
from typing import Any

import pybreaker
import redis
import structlog
from celery import Celery

from core import db, job_store
from core.broker_epoch import check_broker_epoch
from core.celery_config import celery_config
from core.circuit_breaker import RedisBreaker
from core.settings import Settings
from core.task_names import route_for

log = structlog.get_logger(__name__)


class JobPublisher:
    """Sends job tasks by name (the publisher never imports task code)."""

    def __init__(self, celery: Celery, breaker: RedisBreaker) -> None:
        self.celery = celery
        self.breaker = breaker
        self.published = 0

    @classmethod
    def from_settings(cls, settings: Settings, breaker: RedisBreaker) -> JobPublisher:
        producer = Celery("conveyor-publisher", set_as_current=False)
        producer.conf.update(celery_config(settings))
        return cls(producer, breaker)

    def _send(self, kind: str, job_id: uuid.UUID, request_id: str | None) -> None:
        route = route_for(kind)
        self.celery.send_task(
            route.task,
            args=[str(job_id)],
            queue=route.queue,
            headers={"request_id": request_id} if request_id else None,
            retry=False,
        )

    def publish(self, *, kind: str, job_id: uuid.UUID, request_id: str | None = None) -> bool:
        """True when the broker took the message; False leaves the job to the relay."""
        try:
            self.breaker.call(self._send, kind, job_id, request_id)
        except pybreaker.CircuitBreakerError:
            log.info("publish.breaker_open", job_id=str(job_id))
            return False
        except Exception as error:  # any broker error: the outbox keeps the job safe
            log.warning("publish.failed", job_id=str(job_id), error=str(error))
            return False
        self.published += 1
        return True

    def close(self) -> None:
        self.celery.close()


def dispatch_now(
    sessions: db.Sessions,
    publisher: JobPublisher,
    *,
    kind: str,
    job_id: uuid.UUID,
    request_id: str | None,
) -> bool:
    """Publish a just-committed job and record it. Never raises: the job is already stored,
    so any failure (broker or database) just leaves it to the outbox relay."""
    if not publisher.publish(kind=kind, job_id=job_id, request_id=request_id):
        return False
    try:
        with db.transaction(sessions) as session:
            job_store.mark_dispatched(session, job_ids=[job_id])
    except Exception as error:  # published but unmarked: the relay may publish it once more
        log.warning("dispatch.mark_failed", job_id=str(job_id), error=repr(error)[:300])
        return False
    return True


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
        jobs = job_store.lock_undispatched(session, limit=limit, min_age=min_age)
        for job in jobs:
            if not publisher.publish(kind=job.kind, job_id=job.id, request_id=job.request_id):
                pending = len(jobs) - len(published)
                break
            published.append(job.id)
        job_store.mark_dispatched(session, job_ids=published)
    if published or pending:
        log.info("relay.pass", published=len(published), pending=pending)
    return {"published": len(published), "pending": pending}


def relay_pass(
    sessions: db.Sessions,
    publisher: JobPublisher,
    redis_client: redis.Redis,
    *,
    min_age: float = 0.0,
) -> dict[str, Any]:
    """One pass of the relay (beat task and API loop alike): notice a Redis that lost its
    messages (see core.broker_epoch), then publish the outbox. While Redis is unreachable or
    the breaker is open the pass stops at the first Redis call instead of locking rows.
    Periodic callers pass ``min_age=REQUEST_PUBLISH_GRACE``."""
    requeued = check_broker_epoch(redis_client, publisher.breaker, sessions)
    if requeued is None:
        return {"published": 0, "pending": None, "broker": "unavailable"}
    # Jobs a lost Redis took away are published at once, grace or not.
    relayed = relay_undispatched(sessions, publisher, min_age=0.0 if requeued else min_age)
    return {**relayed, "requeued_after_broker_reset": requeued}
