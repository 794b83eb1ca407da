"""Publishing just-committed jobs from the event loop, several per Redis round trip.

Requests only enqueue the job's message (no I/O, no wait for Redis). One task on the loop
drains the queue: everything waiting, up to a batch, is LPUSHed in one pipeline (behind the
breaker), then marked ``dispatched_at`` in one UPDATE (core.broker.async_publisher). If the
process dies first, or Redis is down, the outbox relay publishes the jobs. Starlette's
BackgroundTasks are not used: the next request on the same keep-alive connection would wait
for them. Sync routes (on the threadpool) enqueue through the loop, thread-safely.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable

import structlog

from core import async_db
from core.broker import async_publisher
from core.broker.publisher import PUBLISH_BATCH, JobMessage

log = structlog.get_logger(__name__)


class Dispatcher:
    """Started and closed inside the app's lifespan, on its event loop."""

    def __init__(
        self, pool: async_db.AsyncPool, publisher: async_publisher.AsyncJobPublisher
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._queue: asyncio.Queue[JobMessage | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._pending = 0  # queued or in flight; touched on the loop only
        self._closing = False
        self._task = self._loop.create_task(self._run(), name="dispatch")

    def dispatch(self, message: JobMessage) -> None:
        """Publish soon, never raising: failures are left to the relay."""
        self.dispatch_many([message])

    def dispatch_many(self, messages: Iterable[JobMessage]) -> None:
        batch = list(messages)
        if threading.get_ident() == self._loop_thread:
            self._enqueue(batch)
        else:
            self._loop.call_soon_threadsafe(self._enqueue, batch)

    def _enqueue(self, batch: list[JobMessage]) -> None:
        self._pending += len(batch)
        for message in batch:
            self._queue.put_nowait(message)

    async def _next_batch(self) -> list[JobMessage] | None:
        first = await self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < PUBLISH_BATCH and not self._queue.empty():  # one round trip
            message = self._queue.get_nowait()
            if message is None:
                self._closing = True
                break
            batch.append(message)
        return batch

    async def _run(self) -> None:
        while not self._closing:
            batch = await self._next_batch()
            if batch is None:
                return
            try:
                await async_publisher.dispatch_batch(self._pool, self._publisher, batch)
            except Exception:  # never let the task die: the relay covers these jobs
                log.exception("dispatch.batch_crashed", jobs=len(batch))
            finally:
                self._pending -= len(batch)

    @property
    def idle(self) -> bool:
        """No publish queued or in flight."""
        return self._pending == 0

    async def close(self, timeout: float = 10.0) -> None:
        """Finish the batch in flight; drop queued ones (their jobs stay in the outbox)."""
        self._closing = True
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(self._task, timeout)
        except TimeoutError:
            log.warning("dispatch.close_timed_out", pending=self._pending)
