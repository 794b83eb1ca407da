"""Publishing just-committed jobs on threads of their own.

Starlette's BackgroundTasks run inside the request cycle: the response is sent first, but
the next request on the same keep-alive connection waits until the task is done, so a
publish stuck on a frozen Redis (one socket timeout) still delayed clients. Here the request
only hands the job id over; if the process dies first, the outbox relay publishes the job.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from core import db
from core.broker import publisher as job_publisher


class Dispatcher:
    def __init__(
        self, sessions: db.Sessions, publisher: job_publisher.JobPublisher, *, threads: int = 4
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dispatch")
        self._pending = 0
        self._lock = threading.Lock()

    def dispatch(self, message: job_publisher.JobMessage) -> None:
        """Publish soon, never raising: dispatch_now leaves failures to the relay."""
        with self._lock:
            self._pending += 1
        future = self._pool.submit(
            job_publisher.dispatch_now, self._sessions, self._publisher, message
        )
        future.add_done_callback(self._done)

    def _done(self, _: Future[bool]) -> None:
        with self._lock:
            self._pending -= 1

    @property
    def idle(self) -> bool:
        """No publish queued or in flight."""
        with self._lock:
            return self._pending == 0

    def close(self) -> None:
        """Finish publishes in flight; drop queued ones (their jobs stay in the outbox)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
