"""The API process's outbox relay: publishes jobs whose publish after commit failed (Redis
down, breaker open) as soon as Redis is back, without waiting for Celery beat, and notices a
Redis that came back empty (core.broker.epoch).

Several API processes and beat may relay at once; ``relay_undispatched`` locks rows SKIP
LOCKED, so they split the work instead of publishing the same jobs together.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

import anyio.to_thread
import pybreaker
import redis
import structlog

from core import db
from core.broker import publisher, relay
from core.broker.breaker import RedisBreaker
from core.errors import ConveyorError

log = structlog.get_logger(__name__)


class RelayLoop:
    def __init__(
        self,
        *,
        sessions: db.Sessions,
        job_publisher: publisher.JobPublisher,
        redis_client: redis.Redis,
        breaker: RedisBreaker,
        interval: float,
        open_backoff: float,
        waiting_recheck_seconds: float = 10.0,
    ) -> None:
        self.sessions = sessions
        self.publisher = job_publisher
        self.redis = redis_client
        self.breaker = breaker
        self.interval = interval
        self.waiting_recheck_seconds = waiting_recheck_seconds
        # While the breaker is open every publish is refused anyway; a pass would only lock
        # rows for nothing, so wait for the breaker's reset timeout instead.
        self.open_backoff = open_backoff
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="conveyor-outbox-relay")

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Let the current pass finish (it is bounded by DB and Redis timeouts), then stop."""
        if self._task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            log.warning("relay_loop.stop_timeout")
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            await self.run_once()
            delay = (
                self.open_backoff if self.breaker.state == pybreaker.STATE_OPEN else self.interval
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def run_once(self) -> None:
        """One relay pass in a worker thread (core is sync). Errors are logged, never raised:
        the loop must outlive a database or Redis outage."""
        one_pass = functools.partial(
            relay.relay_pass,
            self.sessions,
            self.publisher,
            self.redis,
            min_age=relay.REQUEST_PUBLISH_GRACE,
            waiting_recheck_seconds=self.waiting_recheck_seconds,
        )
        try:
            await anyio.to_thread.run_sync(one_pass)
        except ConveyorError as error:  # DatabaseUnavailable, mostly
            log.warning("relay_loop.pass_failed", code=error.code, error=error.message)
        except Exception:
            log.exception("relay_loop.pass_crashed")
