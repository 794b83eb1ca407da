"""``JobPublisher`` for the event loop: the API's dispatcher publishes just-committed jobs
with redis.asyncio and marks them over the async pool, so the hot path has no thread.

(A publishing thread beside the event loop cost more than its work: each time it took the
GIL, the loop waited for it, up to the interpreter's 5 ms switch interval, in the middle of
other requests; py-spy showed the loop's sends and polls as its most sampled frames.)
Messages, batches, held jobs, breaker and outbox rules are the sync publisher's
(core.broker.publisher); only the I/O differs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import redis.asyncio
import structlog

from core import async_db, tracing
from core.broker.breaker import RedisBreaker
from core.broker.publisher import JobMessage, MessageBuilder, chunks, log_failed
from core.broker.redis_client import make_async_redis
from core.lifecycle.outbox import MARK_PUBLISHED_SQL
from core.settings import Settings

log = structlog.get_logger(__name__)


class AsyncJobPublisher:
    def __init__(
        self, redis_client: redis.asyncio.Redis, breaker: RedisBreaker, *, grace_seconds: float
    ) -> None:
        self.redis = redis_client
        self.breaker = breaker
        self.messages = MessageBuilder(grace_seconds=grace_seconds)
        self.published = 0

    @classmethod
    def from_settings(cls, settings: Settings, breaker: RedisBreaker) -> AsyncJobPublisher:
        return cls(
            make_async_redis(settings), breaker, grace_seconds=settings.time_limit_grace_seconds
        )

    async def _send_many(self, messages: Sequence[JobMessage]) -> None:
        if tracing.is_configured():  # one round trip per job, inside its span (as sync)
            for message in messages:
                with self.messages.traced(message) as task:
                    await self.redis.lpush(task.queue, task.payload)
            return
        pipeline = self.redis.pipeline(transaction=False)
        for message in messages:
            task = self.messages.task(message, {})
            pipeline.lpush(task.queue, task.payload)
        await pipeline.execute()

    async def publish_many(self, messages: Sequence[JobMessage]) -> list[uuid.UUID]:
        """The ids the broker took (see ``JobPublisher.publish_many``)."""
        published: list[uuid.UUID] = []
        for chunk in chunks(messages):
            try:
                with self.breaker.guarded():
                    await self._send_many(chunk)
            except Exception as error:  # any broker error: the outbox keeps the jobs safe
                log_failed(error, chunk)
                break
            self.published += len(chunk)
            published.extend(message.job_id for message in chunk)
        return published

    async def close(self) -> None:
        await self.redis.aclose()


async def dispatch_batch(
    pool: async_db.AsyncPool, publisher: AsyncJobPublisher, messages: Sequence[JobMessage]
) -> int:
    """``core.broker.publisher.dispatch_batch`` on the event loop. Never raises; how many
    were published and marked (the rest are left to the relay)."""
    published = await publisher.publish_many(messages)
    if not published:
        return 0
    try:
        async with async_db.connection(pool) as conn:
            await async_db.execute(conn, "UPDATE jobs", MARK_PUBLISHED_SQL, {"job_ids": published})
    except Exception as error:  # published but unmarked: the relay may publish them once more
        log.warning("dispatch.mark_failed", jobs=len(published), error=repr(error)[:300])
        return 0
    return len(published)
