"""The per-process recovery loop: outbox relay, lease reaper and lost-message check, on a
thread of their own in every worker main process and every API process; and the chores that
want the same "somewhere, periodically, safely from many processes": the schedule tick,
retention, counter folding, the upload purge.

Never a Celery task: a task would wait behind the jobs that fill the worker's slots, which is
exactly when recovery is needed, and would need beat, a singleton whose crash stops
recovery. Here nothing is a singleton: each pass takes its rows FOR UPDATE SKIP LOCKED, so
any number of processes run it safely, and recovery works as long as one process of the
platform is alive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
import structlog

from core import db
from core.broker.publisher import JobPublisher
from core.broker.relay import REQUEST_PUBLISH_GRACE, relay_pass, republish_lost
from core.errors import ConveyorError
from core.imports import uploads
from core.lifecycle import admission, counters
from core.lifecycle.reaper import reap
from core.lifecycle.retention import purge_finished
from core.schedules.tick import tick
from core.settings import Settings

log = structlog.get_logger(__name__)

COUNTER_FOLD_INTERVAL = 5.0


def _fold_counters(sessions: db.Sessions) -> None:
    with db.transaction(sessions) as session:
        counters.fold(session)


UPLOAD_PURGE_INTERVAL = 3600.0
# A retention pass deletes for at most this long (then the loop relays again) and, while old
# jobs are left, runs again this much later.
RETENTION_PASS_SECONDS = 2.0


@dataclass
class _Duty:
    name: str
    interval: float
    run: Callable[[], object]
    due: float = 0.0
    # A pass that returns True has more to do: it runs again after this instead.
    busy_interval: float | None = None


def _recheck_waiting(sessions: db.Sessions, older_than: float) -> int:
    """Safety net of admission (core.lifecycle.admission): jobs held back by a limit are
    put back in the outbox even when no finishing job woke them (its worker crashed)."""
    with db.transaction(sessions) as session:
        return admission.recheck_waiting(session, older_than=older_than)


class RecoveryLoop:
    def __init__(
        self,
        settings: Settings,
        *,
        sessions: db.Sessions,
        publisher: JobPublisher,
        redis_client: redis.Redis,
    ) -> None:
        self._duties = [
            _Duty(
                "relay",
                settings.relay_interval,
                lambda: relay_pass(
                    sessions, publisher, redis_client, min_age=REQUEST_PUBLISH_GRACE
                ),
            ),
            _Duty("reaper", settings.reaper_interval, lambda: reap(sessions, publisher)),
            _Duty(
                "lost_messages",
                # Often enough that a lost message waits little longer than the setting.
                min(max(settings.republish_after_seconds / 4, 0.5), 60.0),
                lambda: republish_lost(
                    sessions,
                    publisher,
                    redis_client,
                    older_than=settings.republish_after_seconds,
                ),
            ),
            _Duty(
                "waiting",
                # A held-back job is offered again within about the setting.
                settings.waiting_recheck_seconds / 2,
                lambda: _recheck_waiting(sessions, settings.waiting_recheck_seconds),
            ),
            # Not recovery, but the same kind of chore: keep the job counters' pending
            # deltas short even when nobody scrapes /metrics (core.lifecycle.counters).
            _Duty("job_counters", COUNTER_FOLD_INTERVAL, lambda: _fold_counters(sessions)),
            # Schedules fire from here: any number of processes tick, each firing is decided
            # once (core.schedules.tick), so there is no beat to run or to lose.
            _Duty(
                "schedules",
                settings.schedule_tick_interval,
                lambda: tick(sessions, settings, publisher=publisher),
            ),
            _Duty(
                "retention",
                settings.retention_interval_seconds,
                lambda: (
                    purge_finished(
                        sessions,
                        retention_days=settings.job_retention_days,
                        batch_rows=settings.retention_batch_rows,
                        time_budget=RETENTION_PASS_SECONDS,
                    ).more
                ),
                busy_interval=RETENTION_PASS_SECONDS,
            ),
            # Retention, not recovery, but it wants the same "somewhere, periodically".
            _Duty(
                "purge_uploads",
                UPLOAD_PURGE_INTERVAL,
                lambda: uploads.purge(
                    sessions,
                    settings.storage_dir,
                    retention_seconds=settings.upload_retention_seconds,
                ),
            ),
        ]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conveyor-recovery", daemon=True)

    def start(self) -> RecoveryLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Let the current pass finish (bounded by database and Redis timeouts), then stop."""
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("recovery.stop_timeout")

    def _run(self) -> None:
        while not self._stopping.is_set():
            for duty in self._duties:
                if time.monotonic() >= duty.due and not self._stopping.is_set():
                    busy = self._run_once(duty) is True and duty.busy_interval is not None
                    interval = duty.busy_interval if busy else duty.interval
                    duty.due = time.monotonic() + (interval or duty.interval)
            next_due = min(duty.due for duty in self._duties)
            self._stopping.wait(max(0.0, next_due - time.monotonic()))

    def _run_once(self, duty: _Duty) -> object:
        """Errors are logged, never raised: the loop must outlive any outage."""
        try:
            return duty.run()
        except ConveyorError as error:  # DatabaseUnavailable, mostly
            log.warning("recovery.pass_failed", duty=duty.name, code=error.code)
        except Exception:
            log.exception("recovery.pass_crashed", duty=duty.name)
        return None
