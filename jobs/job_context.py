"""What a job body sees: its params and checkpoint, ``commit_unit`` to commit one unit of work
together with its progress and checkpoint (fenced by the lease and the unit count), and the
stop signal raised by the heartbeat (cancel, lost lease, time limit)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from sqlalchemy.orm import Session

from core import db, tracing
from core.errors import DatabaseUnavailable, JobCancelled, LeaseLost
from core.lifecycle import leases
from core.lifecycle.heartbeat import StopReason, StopSignal
from core.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")

DB_RETRY_DELAYS: tuple[float, ...] = (0.2, 0.5, 1, 2, 5)


def with_database_retry(
    attempt: Callable[[], T], *, window: float, delays: tuple[float, ...] = DB_RETRY_DELAYS
) -> T:
    """Run ``attempt``; while the database is unavailable, wait and run it again, for up to
    ``window`` seconds of waiting in all. Then DatabaseUnavailable propagates."""
    waited = 0.0
    pauses = iter(delays)
    while True:
        try:
            return attempt()
        except DatabaseUnavailable:
            delay = next(pauses, delays[-1])
            if waited + delay > window:
                raise
            log.warning("worker.database_unavailable", retry_in=delay)
            time.sleep(delay)
            waited += delay


@dataclass(frozen=True)
class Progress:
    """What one committed unit reports: counters, and where to resume."""

    done: int
    total: int | None = None
    failed: int = 0
    checkpoint: dict[str, Any] | None = None


@dataclass
class JobContext:
    job_id: uuid.UUID
    kind: str
    params: dict[str, Any]
    attempt: int
    checkpoint: dict[str, Any] | None
    lease: leases.Lease
    sessions: db.Sessions
    settings: Settings
    # Units committed so far (by every attempt); the next unit's commit is fenced on it.
    unit_seq: int = 0
    # This attempt's run-time limit (seconds); the heartbeat raises the stop signal past it.
    time_limit_seconds: float = 3600.0
    # The result so far; reported if the job is cancelled or fails part-way.
    result: dict[str, Any] | None = None
    stop: StopSignal = field(default_factory=StopSignal)
    _db_retry_delays: tuple[float, ...] = field(default=DB_RETRY_DELAYS, repr=False)

    @property
    def stop_event(self) -> threading.Event:
        """Set when the body should stop; for long units that poll (a process to cancel)."""
        return self.stop.event

    @property
    def stop_reason(self) -> StopReason | None:
        return self.stop.reason

    def raise_if_stopped(self) -> None:
        """Raise JobCancelled, LeaseLost or TimeLimitExceeded if the body must stop."""
        error = self.stop.error()
        if error is not None:
            raise error

    def sleep(self, seconds: float) -> None:
        """Wait, but stop (raise) as soon as the stop signal is raised."""
        self.stop.event.wait(seconds)
        self.raise_if_stopped()

    def commit_unit(self, work: Callable[[Session], Progress]) -> None:
        """Run ``work`` and record its progress in one transaction, renewing the lease.

        A zombie worker's unit is rolled back whole (the fenced progress write raises
        LeaseLost). While the database is unavailable the unit is retried, so nothing is lost;
        after the retry window the error propagates and the lease reaper takes over. A retry
        after an error at COMMIT itself (the server may have committed) first reads the unit
        count: if this unit was recorded, it is not applied again. Raises the stop signal's
        error (JobCancelled, TimeLimitExceeded, LeaseLost) after the commit.
        """
        self.raise_if_stopped()
        expected = self.unit_seq
        tries = 0

        def attempt() -> bool:
            nonlocal tries
            tries += 1
            if self.stop.reason is StopReason.lease_lost:
                raise LeaseLost()  # the job is someone else's now: stop retrying
            return self._commit_once(work, expected, check_applied=tries > 1)

        with tracing.tracer.start_as_current_span(
            "job.unit", attributes={"conveyor.unit_seq": expected + 1}
        ):
            cancel = self.retry_database(attempt)
        self.unit_seq = expected + 1
        if cancel:
            raise JobCancelled()
        self.raise_if_stopped()

    def _commit_once(
        self, work: Callable[[Session], Progress], expected: int, *, check_applied: bool
    ) -> bool:
        with db.transaction(self.sessions) as session:
            if check_applied:
                state = leases.unit_state(session, lease=self.lease)
                if state.unit_seq > expected:
                    log.warning("job.unit_already_committed", unit_seq=state.unit_seq)
                    self.checkpoint = state.checkpoint
                    return state.cancel_requested
            progress = work(session)
            cancel = leases.save_progress(
                session,
                lease=self.lease,
                lease_seconds=self.settings.lease_seconds,
                unit_seq=expected,
                done=progress.done,
                total=progress.total,
                failed=progress.failed,
                checkpoint=progress.checkpoint,
            )
        if progress.checkpoint is not None:
            self.checkpoint = progress.checkpoint
        return cancel

    def retry_database(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` again while the database is unavailable, for up to four leases;
        past that the lease has long expired and the reaper owns the job."""
        return with_database_retry(
            attempt, window=self.settings.lease_seconds * 4, delays=self._db_retry_delays
        )
