"""Live log readers wake up on PostgreSQL NOTIFY instead of polling.

Workers ``NOTIFY conveyor_job_logs, '<job id>'`` in the transaction that appends log lines
(core/lifecycle/job_logs.py). One connection per API process ``LISTEN``s and sets the
asyncio events of the streams following that job. It connects on first use and reconnects
after errors; streams also re-read on a timeout, so a lost connection costs latency, never
lines.
"""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import structlog

from core.lifecycle.job_logs import CHANNEL

log = structlog.get_logger(__name__)

RECONNECT_SECONDS = 1.0


class LogNotifier:
    def __init__(self, dsn: str, *, connect_timeout: int) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, job_id: str) -> asyncio.Event:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="conveyor-log-notifier")
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        return event

    def unsubscribe(self, job_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(job_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[job_id]

    async def _listen(self) -> None:
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, connect_timeout=self._connect_timeout
                )
                async with connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self._wake_all()  # lines written while we were not listening
                    async for notify in connection.notifies():
                        for event in self._waiters.get(notify.payload, ()):
                            event.set()
            except psycopg.Error as error:
                log.warning("log_notifier.disconnected", error=str(error)[:200])
            await asyncio.sleep(RECONNECT_SECONDS)

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
