"""Publishing "run job X" messages: through the breaker, bounded, never blocking on a dead
broker. The job row is the outbox; ``core.broker.relay`` publishes whatever is still waiting."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import pybreaker
import redis
import structlog
from opentelemetry.trace import SpanKind

from core import db, tracing
from core.broker import task_message
from core.broker.breaker import RedisBreaker
from core.broker.redis_client import make_redis
from core.broker.task_names import route_for
from core.lifecycle import outbox
from core.settings import Settings

log = structlog.get_logger(__name__)


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


# Messages per Redis round trip (one pipeline of LPUSHes).
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


class MessageBuilder:
    """A job's task message, and the publish span that carries its trace."""

    def __init__(self, *, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds

    def task(self, message: JobMessage, headers: dict[str, Any]) -> task_message.TaskMessage:
        # The job's run-time limit travels with the message: a prefork worker raises
        # SoftTimeLimitExceeded in the body at the limit and kills the pool process at
        # limit + grace (the heartbeat also stops the body at the limit, in any pool).
        route = route_for(message.kind)
        if message.request_id:
            headers = {**headers, "request_id": message.request_id}
        return task_message.job_task_message(
            task=route.task,
            queue=route.queue,
            job_id=str(message.job_id),
            soft_time_limit=message.time_limit_seconds,
            time_limit=message.time_limit_seconds + self.grace_seconds,
            headers=headers,
        )

    @contextmanager
    def traced(self, message: JobMessage) -> Iterator[task_message.TaskMessage]:
        """The message inside its job's publish span (a child of the job's trace; the
        worker's task span is a child of this one, W3C headers in the message). The Redis
        write must happen inside the block to belong to the span."""
        route = route_for(message.kind)
        with tracing.tracer.start_as_current_span(
            f"publish {route.task}",
            context=tracing.job_context(message.traceparent),
            kind=SpanKind.PRODUCER,
            attributes={
                "conveyor.job_id": str(message.job_id),
                "messaging.destination": route.queue,
            },
        ):
            headers: dict[str, Any] = {}
            tracing.inject(headers)
            yield self.task(message, headers)


def chunks(messages: Sequence[JobMessage]) -> Iterator[list[JobMessage]]:
    """The messages to publish (held ones never are), one pipelined round trip each."""
    sendable = [message for message in messages if not message.held]
    for start in range(0, len(sendable), PUBLISH_BATCH):
        yield sendable[start : start + PUBLISH_BATCH]


def log_failed(error: Exception, chunk: Sequence[JobMessage]) -> None:
    """A chunk the broker did not take (the breaker refused it, or Redis failed). Its jobs
    stay in the outbox; the batch is uncertain (some messages may be on Redis), so they may
    be published again, which is harmless (only one delivery can claim)."""
    if isinstance(error, pybreaker.CircuitBreakerError):
        log.info("publish.breaker_open", jobs=len(chunk))
    else:
        log.warning("publish.batch_failed", jobs=len(chunk), error=str(error))


class JobPublisher:
    """LPUSHes job tasks onto their queues (the publisher never imports task code)."""

    def __init__(
        self, redis_client: redis.Redis, breaker: RedisBreaker, *, grace_seconds: float
    ) -> None:
        self.redis = redis_client
        self.breaker = breaker
        self.messages = MessageBuilder(grace_seconds=grace_seconds)
        self.published = 0

    @classmethod
    def from_settings(cls, settings: Settings, breaker: RedisBreaker) -> JobPublisher:
        return cls(make_redis(settings), breaker, grace_seconds=settings.time_limit_grace_seconds)

    def _send_many(self, messages: Sequence[JobMessage]) -> None:
        if tracing.is_configured():
            # Each job's Redis write stays a child of its own publish span (a pipeline
            # executed after the loop would belong to no job's trace): traced processes
            # publish one message per round trip.
            for message in messages:
                with self.messages.traced(message) as task:
                    self.redis.lpush(task.queue, task.payload)
            return
        pipeline = self.redis.pipeline(transaction=False)
        for message in messages:
            task = self.messages.task(message, {})
            pipeline.lpush(task.queue, task.payload)
        pipeline.execute()

    def publish(self, message: JobMessage) -> bool:
        """True when the broker took the message; False leaves the job to the relay."""
        return bool(self.publish_many([message]))

    def publish_many(self, messages: Sequence[JobMessage]) -> list[uuid.UUID]:
        """Publish in pipelined batches, until one fails; the ids the broker took."""
        published: list[uuid.UUID] = []
        for chunk in chunks(messages):
            try:
                self.breaker.call(self._send_many, chunk)
            except Exception as error:  # any broker error: the outbox keeps the jobs safe
                log_failed(error, chunk)
                break
            self.published += len(chunk)
            published.extend(message.job_id for message in chunk)
        return published

    def close(self) -> None:
        self.redis.close()


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
