"""Publishing "run job X" messages: through the breaker, bounded, never blocking on a dead
broker. The job row is the outbox; ``core.broker.relay`` publishes whatever is still waiting."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import kombu.exceptions
import pybreaker
import redis
import structlog
from celery import Celery
from opentelemetry.trace import SpanKind

from core import db, tracing
from core.broker import task_message
from core.broker.breaker import RedisBreaker
from core.broker.celery_config import celery_config
from core.broker.task_names import Route, route_for
from core.lifecycle import outbox
from core.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")


class JobFields(Protocol):
    """What a message is made of: an ORM ``Job`` or the API's ``JobRecord``."""

    @property
    def kind(self) -> str: ...
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def time_limit_seconds(self) -> float: ...
    @property
    def traceparent(self) -> str | None: ...
    @property
    def waiting_reason(self) -> str | None: ...


# Messages per Redis round trip: kombu's Producer.batch() pipelines the LPUSHes.
PUBLISH_BATCH = 500


@dataclass(frozen=True)
class JobMessage:
    """What a "run job X" message carries, taken from the job row."""

    kind: str
    job_id: uuid.UUID
    request_id: str | None
    time_limit_seconds: float
    traceparent: str | None = None
    # A job that waits on purpose (a paused queue, a limit) is never published: the relay
    # publishes it once it is released. Whoever committed it need not check.
    held: bool = False

    @classmethod
    def of(cls, job: JobFields) -> JobMessage:
        return cls(
            job.kind,
            job.id,
            job.request_id,
            job.time_limit_seconds,
            job.traceparent,
            held=job.waiting_reason is not None,
        )


def _broker_errors_unwrapped(send: Callable[[T], None], argument: T) -> None:
    """Run ``send``; kombu wraps Redis' errors (OperationalError, BatchPublishError) and the
    breaker, its counters and /health/circuit-breaker should name the real one (a timeout,
    a refused connection)."""
    try:
        send(argument)
    except (kombu.exceptions.OperationalError, kombu.exceptions.BatchPublishError) as error:
        if isinstance(error.__cause__, redis.RedisError):
            raise error.__cause__ from error
        raise


class JobPublisher:
    """Sends job tasks by name (the publisher never imports task code)."""

    def __init__(self, celery: Celery, breaker: RedisBreaker, *, grace_seconds: float) -> None:
        self.celery = celery
        self.breaker = breaker
        self.grace_seconds = grace_seconds
        self.published = 0

    @classmethod
    def from_settings(cls, settings: Settings, breaker: RedisBreaker) -> JobPublisher:
        producer = Celery("conveyor-publisher", set_as_current=False)
        producer.conf.update(celery_config(settings))
        return cls(producer, breaker, grace_seconds=settings.time_limit_grace_seconds)

    def _send(self, message: JobMessage, producer: Any = None) -> None:
        route = route_for(message.kind)
        headers: dict[str, Any] = {"request_id": message.request_id} if message.request_id else {}
        if tracing.is_configured():
            # Every publish of a job (direct, relay, reaper) continues the job's trace; the
            # worker's task span is a child of this one (W3C headers in the message).
            with tracing.tracer.start_as_current_span(
                f"publish {route.task}",
                context=tracing.job_context(message.traceparent),
                kind=SpanKind.PRODUCER,
                attributes={
                    "conveyor.job_id": str(message.job_id),
                    "messaging.destination": route.queue,
                },
            ):
                tracing.inject(headers)
                self._send_task(route, message, headers, producer)
        else:
            self._send_task(route, message, headers, producer)

    def _send_task(
        self, route: Route, message: JobMessage, headers: dict[str, Any], producer: Any
    ) -> None:
        # The job's run-time limit travels with the message: a prefork worker raises
        # SoftTimeLimitExceeded in the body at the limit and kills the pool process at
        # limit + grace (the heartbeat also stops the body at the limit, in any pool).
        task = task_message.job_task_message(
            task=route.task,
            queue=route.queue,
            job_id=str(message.job_id),
            soft_time_limit=message.time_limit_seconds,
            time_limit=message.time_limit_seconds + self.grace_seconds,
            headers=headers,
        )
        if producer is not None:
            task_message.publish(producer, task)
            return
        with self.celery.producer_or_acquire() as own:
            task_message.publish(own, task)

    def _send_many(self, messages: Sequence[JobMessage]) -> None:
        if tracing.is_configured():
            # Each job's Redis write stays a child of its own publish span (a pipeline
            # flushed after the loop would belong to no job's trace): traced processes
            # publish one message per round trip.
            with self.celery.producer_or_acquire() as producer:
                for message in messages:
                    self._send(message, producer)
            return
        # One producer, one pipeline: every LPUSH of the batch goes in one round trip
        # (kombu flushes the pipeline when the batch context exits).
        with (
            self.celery.producer_or_acquire() as producer,
            producer.batch(max_size=4 * len(messages) + 16),
        ):
            for message in messages:
                self._send(message, producer)

    def publish(self, message: JobMessage) -> bool:
        """True when the broker took the message; False leaves the job to the relay."""
        if message.held:
            return False
        try:
            self.breaker.call(_broker_errors_unwrapped, self._send, message)
        except pybreaker.CircuitBreakerError:
            log.info("publish.breaker_open", job_id=str(message.job_id))
            return False
        except Exception as error:  # any broker error: the outbox keeps the job safe
            log.warning("publish.failed", job_id=str(message.job_id), error=str(error))
            return False
        self.published += 1
        return True

    def publish_many(self, messages: Sequence[JobMessage]) -> list[uuid.UUID]:
        """Publish in pipelined batches; the ids the broker took. A batch that fails is
        uncertain (some messages may be on Redis): its jobs stay in the outbox and may be
        published again, which is harmless (only one delivery can claim)."""
        messages = [message for message in messages if not message.held]
        published: list[uuid.UUID] = []
        for start in range(0, len(messages), PUBLISH_BATCH):
            chunk = messages[start : start + PUBLISH_BATCH]
            try:
                self.breaker.call(_broker_errors_unwrapped, self._send_many, chunk)
            except pybreaker.CircuitBreakerError:
                log.info("publish.breaker_open", jobs=len(messages) - start)
                break
            except Exception as error:  # any broker error: the outbox keeps the jobs safe
                log.warning("publish.batch_failed", jobs=len(chunk), error=str(error))
                break
            self.published += len(chunk)
            published.extend(message.job_id for message in chunk)
        return published

    def close(self) -> None:
        self.celery.close()


def dispatch_batch(
    sessions: db.Sessions, publisher: JobPublisher, messages: Sequence[JobMessage]
) -> int:
    """Publish just-committed jobs (pipelined) and mark them in one UPDATE. Never raises;
    returns how many were published and marked (the rest are left to the relay)."""
    published = publisher.publish_many(messages)
    if not published:
        return 0
    try:
        with db.autocommit(db.engine_of(sessions)) as connection:
            outbox.mark_published(connection, job_ids=published)
    except Exception as error:  # published but unmarked: the relay may publish them once more
        log.warning("dispatch.mark_failed", jobs=len(published), error=repr(error)[:300])
        return 0
    return len(published)
