"""Keeping a running job's lease alive beside its body, and telling the body when to stop.

Interim copy for the deployments branch: the job runtime of issue 8 brings the real one
(same names), which replaces this file when main is merged.
"""

from __future__ import annotations

import enum
import threading

import structlog

from core import db
from core.errors import ConveyorError, JobCancelled, LeaseLost, TimeLimitExceeded
from core.lifecycle import commands

log = structlog.get_logger(__name__)


class StopReason(enum.StrEnum):
    cancel_requested = "cancel_requested"
    lease_lost = "lease_lost"
    time_limit = "time_limit"


class StopSignal:
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
        lease: commands.Lease,
        *,
        lease_seconds: float,
        signal: StopSignal,
    ) -> None:
        self._sessions = sessions
        self._lease = lease
        self._lease_seconds = lease_seconds
        self._signal = signal
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conveyor-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self._lease_seconds / 3):
            try:
                with db.transaction(self._sessions) as session:
                    cancel = commands.renew_lease(
                        session, lease=self._lease, lease_seconds=self._lease_seconds
                    )
            except LeaseLost:
                self._signal.raise_(StopReason.lease_lost)
                return
            except Exception as error:
                log.warning("heartbeat.renew_failed", error=type(error).__name__)
                continue
            if cancel:
                self._signal.raise_(StopReason.cancel_requested)
