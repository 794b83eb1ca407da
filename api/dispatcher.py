"""Publishing just-committed jobs on a thread of its own, several per Redis round trip.

Requests only enqueue the job's message (no I/O on the event loop, no wait for Redis). One
thread drains the queue: everything waiting, up to a batch, is published through one kombu
producer over a Redis pipeline (behind the breaker), then marked ``dispatched_at`` in one
UPDATE. If the process dies first, or Redis is down, the outbox relay publishes the jobs.
Starlette's BackgroundTasks are not used: the next request on the same keep-alive connection
would wait for them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable

import structlog

from core import db
from core.broker import publisher as job_publisher

log = structlog.get_logger(__name__)


class Dispatcher:
    def __init__(self, sessions: db.Sessions, publisher: job_publisher.JobPublisher) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._queue: queue.SimpleQueue[job_publisher.JobMessage | None] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="dispatch", daemon=True)
        self._thread.start()

    def dispatch(self, message: job_publisher.JobMessage) -> None:
        """Publish soon, never raising: failures are left to the relay."""
        self.dispatch_many([message])

    def dispatch_many(self, messages: Iterable[job_publisher.JobMessage]) -> None:
        batch = list(messages)
        with self._lock:
            self._pending += len(batch)
        for message in batch:
            self._queue.put(message)

    def _next_batch(self) -> list[job_publisher.JobMessage] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < job_publisher.PUBLISH_BATCH:  # one pipelined round trip
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                break
            if message is None:
                self._closing = True
                break
            batch.append(message)
        return batch

    def _run(self) -> None:
        while not self._closing:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                job_publisher.dispatch_batch(self._sessions, self._publisher, batch)
            except Exception:  # never let the thread die: the relay covers these jobs
                log.exception("dispatch.batch_crashed", jobs=len(batch))
            finally:
                with self._lock:
                    self._pending -= len(batch)

    @property
    def idle(self) -> bool:
        """No publish queued or in flight."""
        with self._lock:
            return self._pending == 0

    def close(self, timeout: float = 10.0) -> None:
        """Finish the batch in flight; drop queued ones (their jobs stay in the outbox)."""
        self._closing = True
        self._queue.put(None)
        self._thread.join(timeout)
