"""Publishing "run job X" messages: through the breaker, bounded, never blocking on a dead
broker. The job row is the outbox; ``core.broker.relay`` publishes whatever is still waiting."""

from __future__ import annotations

import uuid

import pybreaker
import structlog
from celery import Celery

from core import db
from core.broker.breaker import RedisBreaker
from core.broker.celery_config import celery_config
from core.broker.task_names import route_for
from core.lifecycle import outbox
from core.settings import Settings

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
            outbox.mark_dispatched(session, job_ids=[job_id])
    except Exception as error:  # published but unmarked: the relay may publish it once more
        log.warning("dispatch.mark_failed", job_id=str(job_id), error=repr(error)[:300])
        return False
    return True
