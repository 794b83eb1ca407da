"""Keeping a running job's lease alive, whatever the length of its units, and telling the body
when to stop.

A ``Heartbeat`` thread runs beside the job body in the worker's pool process. Every third of
the lease it renews the lease with a fenced UPDATE (its own connection, its own short
transaction), which also reads ``cancel_requested``; so a unit of any length can commit, and
a cancel reaches even a long unit within a third of the lease. It raises the ``StopSignal``
when:

- the job is cancelled (``cancel_requested``);
- the lease is lost: a renewal finds the job is no longer this worker's, or no renewal has
  succeeded for a whole lease (PostgreSQL unreachable: the lease has expired by now and the
  reaper will give the job to another worker, so this one must not write);
- the soft time limit passes.

The body checks the signal between units and while it waits (``JobContext``); every write it
makes is fenced by the lease anyway, so a body that does not look cannot write either.
"""

from __future__ import annotations

import enum
import threading
import time

import structlog

from core import db
from core.errors import ConveyorError, JobCancelled, LeaseLost, TimeLimitExceeded
from core.lifecycle import leases

log = structlog.get_logger(__name__)


class StopReason(enum.StrEnum):
    cancel_requested = "cancel_requested"
    lease_lost = "lease_lost"
    time_limit = "time_limit"


class StopSignal:
    """Raised once, read by the body. A lost lease outranks the other reasons: whatever the
    body was asked to do, it must not write any more."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._reason: StopReason | None = None
        self._lock = threading.Lock()

    @property
    def reason(self) -> StopReason | None:
        return self._reason

    def raise_(self, reason: StopReason) -> None:
        with self._lock:
            if self._reason is None or reason is StopReason.lease_lost:
                self._reason = reason
        self.event.set()

    def error(self) -> ConveyorError | None:
        """The error a body stopped by this signal ends with; None while not raised."""
        reason = self._reason
        if reason is StopReason.cancel_requested:
            return JobCancelled()
        if reason is StopReason.lease_lost:
            return LeaseLost()
        if reason is StopReason.time_limit:
            return TimeLimitExceeded()
        return None


class Heartbeat:
    def __init__(
        self,
        sessions: db.Sessions,
        lease: leases.Lease,
        *,
        lease_seconds: float,
        time_limit: float,
        signal: StopSignal,
    ) -> None:
        self._sessions = sessions
        self._lease = lease
        self._lease_seconds = lease_seconds
        self._interval = lease_seconds / 3
        self._soft_deadline = time.monotonic() + time_limit
        self._signal = signal
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conveyor-heartbeat", daemon=True)
        self.renewals = 0

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        last_renewed = time.monotonic()
        next_renewal = last_renewed + self._interval
        while not self._done.wait(self._wait_time(next_renewal)):
            now = time.monotonic()
            if now >= self._soft_deadline:
                self._signal.raise_(StopReason.time_limit)
            if now < next_renewal:
                continue
            next_renewal = now + self._interval
            if self._renew():
                last_renewed = now
            elif now - last_renewed >= self._lease_seconds:
                log.error("heartbeat.lease_presumed_lost", job_id=str(self._lease.job_id))
                self._signal.raise_(StopReason.lease_lost)
            if self._signal.reason is StopReason.lease_lost:
                return  # nothing left to protect

    def _wait_time(self, next_renewal: float) -> float:
        """Until the next renewal, or the soft deadline if it comes first and has not passed."""
        now = time.monotonic()
        target = (
            min(next_renewal, self._soft_deadline) if now < self._soft_deadline else next_renewal
        )
        return max(0.0, target - now)

    def _renew(self) -> bool:
        try:
            with db.transaction(self._sessions) as session:
                # A renewal that cannot finish within one beat is as good as failed.
                db.set_local_statement_timeout(session, self._interval)
                cancel = leases.renew_lease(
                    session, lease=self._lease, lease_seconds=self._lease_seconds
                )
        except LeaseLost:
            log.warning("heartbeat.lease_lost", job_id=str(self._lease.job_id))
            self._signal.raise_(StopReason.lease_lost)
            return False
        except Exception as error:  # DatabaseUnavailable mostly: try again next beat
            log.warning(
                "heartbeat.renew_failed", job_id=str(self._lease.job_id), error=type(error).__name__
            )
            return False
        self.renewals += 1
        if cancel:
            self._signal.raise_(StopReason.cancel_requested)
        return True
