"""Firing due schedules, exactly once per fire time, from any number of processes.

Every API and worker process runs ``tick`` every ``schedule_tick_interval`` seconds
(core.lifecycle.recovery). Each schedule is handled in a transaction of its own:

1. lock one due schedule (``next_fire_at <= now``, not paused) FOR UPDATE SKIP LOCKED, so
   concurrent ticks split the schedules and never handle one at the same time;
2. decide each due fire time by the schedule's ``catch_up`` policy and ``overlap``;
3. insert the firing row (unique on ``(schedule_id, fire_time)``; ON CONFLICT DO NOTHING)
   and, when it fires, its job(s) through ``commands.submit_job`` on the same session;
4. advance ``next_fire_at`` and ``last_fired_at``; COMMIT.

A crash anywhere before the COMMIT leaves nothing: the schedule is still due and the next
tick decides the same fire time again. After the COMMIT the jobs are in the outbox; they are
published at once here, or by the relay. What counts as *missed* (for ``catch_up``): a fire
time picked up more than the grace (``schedule_misfire_grace_seconds``, at most half the
schedule's period, at least two ticks + 1 s) after it was due, i.e. while no process was
ticking.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from core import db
from core.broker.publisher import JobMessage, JobPublisher, dispatch_batch
from core.deployments import limits
from core.errors import ConveyorError, DependencyUnavailable, PayloadTooLarge
from core.imports.options import StoredFile
from core.imports.uploads import IMPORT_KIND
from core.lifecycle import commands
from core.lifecycle.states import ACTIVE
from core.models import ApiKey, Job, Schedule, ScheduleFiring
from core.schedules import inbox
from core.schedules.template import JobSpec, job_spec
from core.schedules.timing import Timing
from core.settings import Settings

log = structlog.get_logger(__name__)

CREATED = "created"
SKIPPED_OVERLAP = "skipped_overlap"
SKIPPED_NO_INPUT = "skipped_no_input"
SKIPPED_CATCH_UP = "skipped_catch_up"
# The firing could not make its job (its template no longer valid under the operator's
# limits, an unreadable inbox...): recorded with the reason, and the schedule moves on
# instead of blocking every tick behind it.
FAILED = "failed"
# Bounds per schedule and tick: a schedule down for a long time catches up over several
# ticks ("all") or records only its most recent missed fire times ("skip", "latest").
MAX_FIRINGS_PER_TICK = 100
MAX_SKIPPED_RECORDED = 100


@dataclass
class TickResult:
    schedules: int = 0
    firings: dict[str, int] = field(default_factory=dict)
    messages: list[JobMessage] = field(default_factory=list)


def timing_of(schedule: Schedule) -> Timing:
    return Timing(schedule.cron, schedule.interval_seconds, schedule.timezone, schedule.anchor_at)


def _lock_due(session: Session, now: datetime | None, *, imports: bool) -> Schedule | None:
    """One due schedule, locked; ``now`` None means the database's clock (an idle tick is
    then one statement). A process without an import inbox leaves import schedules to the
    processes that have one."""
    due_by: datetime | sa.ColumnElement[datetime] = sa.func.now() if now is None else now
    kinds = [] if imports else [Schedule.job["kind"].astext != IMPORT_KIND]
    return session.scalar(
        sa.select(Schedule)
        .where(
            ~Schedule.paused,
            Schedule.next_fire_at <= due_by,
            # A revoked owner's schedule does not fire (its jobs would run as nobody).
            Schedule.owner_id.in_(sa.select(ApiKey.id).where(ApiKey.revoked_at.is_(None))),
            *kinds,
        )
        .order_by(Schedule.next_fire_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )


def _recent_due(schedule: Schedule, timing: Timing, now: datetime) -> list[datetime]:
    """The most recent due fire times (at most the ones recorded, and the latest). Only
    these matter, so they are found from now backwards: a schedule that was down for a
    long time is not walked through fire time by fire time from its old next_fire_at."""
    keep = MAX_SKIPPED_RECORDED + 1
    recent = timing.latest_between(max(schedule.next_fire_at, now - timedelta(days=8)), now, keep)
    if not recent:  # a rare schedule (say yearly) whose last due time is older than 8 days
        recent = timing.latest_between(schedule.next_fire_at, now, keep)
    return recent


def _plan(
    schedule: Schedule, timing: Timing, now: datetime, settings: Settings
) -> list[tuple[datetime, bool]]:
    """The due fire times to record now, each with whether it may fire (else missed)."""
    if schedule.catch_up == "all":
        due = list(islice(timing.times_between(schedule.next_fire_at, now), MAX_FIRINGS_PER_TICK))
        return [(fire_time, True) for fire_time in due]
    due = _recent_due(schedule, timing, now)
    if not due:
        return []
    *missed, latest = due
    # Late by more than the grace means nothing ticked when it fell due. The grace is at
    # most half the period, but never less than a couple of ticks (a 1 s schedule ticked
    # every second is always up to a second late).
    floor = 2 * settings.schedule_tick_interval + 1
    grace = min(settings.schedule_misfire_grace_seconds, max(timing.period_at(latest) / 2, floor))
    on_time = (now - latest).total_seconds() <= grace
    fires = schedule.catch_up == "latest" or on_time
    return [(t, False) for t in missed[-MAX_SKIPPED_RECORDED:]] + [(latest, fires)]


def _overlapping(session: Session, schedule_id: uuid.UUID) -> bool:
    """Whether a job of this schedule is still queued or running."""
    found = session.scalar(
        sa.select(Job.id)
        .where(Job.schedule_id == schedule_id, Job.status.in_([s.value for s in ACTIVE]))
        .limit(1)
    )
    return found is not None


def _record(
    session: Session,
    schedule: Schedule,
    fire_time: datetime,
    status: str,
    detail: dict[str, object],
) -> int | None:
    """The firing row, or None when this fire time was already decided."""
    inserted: int | None = session.scalar(
        pg_insert(ScheduleFiring)
        .values(schedule_id=schedule.id, fire_time=fire_time, status=status, detail=detail)
        .on_conflict_do_nothing(index_elements=["schedule_id", "fire_time"])
        .returning(ScheduleFiring.id)
    )
    return inserted


def _submit(
    session: Session, schedule: Schedule, fire_time: datetime, spec: JobSpec, settings: Settings
) -> Job:
    submitted = commands.submit_job(
        session,
        kind=spec.kind,
        params=spec.params,
        principal_id=schedule.owner_id,
        max_attempts=settings.max_attempts,
        time_limit_seconds=spec.time_limit_seconds,
        schedule_id=schedule.id,
        fire_time=fire_time,
    )
    if spec.lock_keys:
        limits.record_targets(session, job_id=submitted.job.id, lock_keys=spec.lock_keys)
    return submitted.job


def _inbox_uploads(
    session: Session, schedule: Schedule, fire_time: datetime, settings: Settings
) -> tuple[list[StoredFile], list[str]]:
    """Claim this firing's inbox files and copy them to upload storage; also settle claimed
    folders an earlier crash left (see core.schedules.inbox)."""
    assert settings.import_inbox is not None
    root: Path = settings.import_inbox
    adopt = []
    for old_time, folder in inbox.leftover_claims(root, schedule.id):
        if old_time == fire_time:  # this very firing, retried after a crash: claim() reuses it
            continue
        committed = session.scalar(
            sa.select(ScheduleFiring.id).where(
                ScheduleFiring.schedule_id == schedule.id,
                ScheduleFiring.fire_time == old_time,
                ScheduleFiring.status != FAILED,
            )
        )
        if committed is not None:
            inbox.mark_processed(root, schedule.id, old_time)
        else:
            adopt.append(folder)
    uploads, refused = [], []
    for path in inbox.claim(root, schedule.id, fire_time, schedule.job["inbox_pattern"], adopt):
        try:
            uploads.append(inbox.store(path, settings.storage_dir, settings.max_upload_bytes))
        except PayloadTooLarge:
            refused.append(path.name)
    return uploads, refused


def _fire(
    session: Session, schedule: Schedule, fire_time: datetime, settings: Settings
) -> tuple[str, list[Job]]:
    """Decide one fire time that may fire: its status and the jobs it created. The firing
    row goes in first: if this fire time was already decided, nothing else happens (not
    even claiming inbox files)."""
    firing_id = _record(session, schedule, fire_time, CREATED, {})
    if firing_id is None:
        return CREATED, []
    status, detail, jobs = CREATED, dict[str, object](), list[Job]()
    if schedule.overlap == "skip" and _overlapping(session, schedule.id):
        status = SKIPPED_OVERLAP
    else:
        uploads: list[StoredFile | None] = [None]
        if schedule.job["kind"] == IMPORT_KIND:
            stored, refused = _inbox_uploads(session, schedule, fire_time, settings)
            uploads = list[StoredFile | None](stored)
            if refused:
                detail["refused_too_large"] = refused
        specs = [job_spec(schedule.job, settings, upload) for upload in uploads]
        jobs = [_submit(session, schedule, fire_time, spec, settings) for spec in specs]
        status = CREATED if jobs else SKIPPED_NO_INPUT
    session.execute(
        sa.update(ScheduleFiring)
        .where(ScheduleFiring.id == firing_id)
        .values(status=status, detail=detail, job_id=jobs[0].id if jobs else None)
    )
    return status, jobs


def _handle(
    session: Session, schedule: Schedule, now: datetime, settings: Settings, result: TickResult
) -> list[datetime]:
    timing = timing_of(schedule)
    plan = _plan(schedule, timing, now, settings)
    fired: list[datetime] = []
    for fire_time, may_fire in plan:
        if may_fire:
            status, jobs = _fire(session, schedule, fire_time, settings)
            result.messages.extend(JobMessage.of(job) for job in jobs)
            if schedule.job["kind"] == IMPORT_KIND:
                fired.append(fire_time)
        else:
            status = SKIPPED_CATCH_UP
            _record(session, schedule, fire_time, status, {})
        result.firings[status] = result.firings.get(status, 0) + 1
    last = plan[-1][0] if plan else schedule.next_fire_at
    schedule.last_fired_at = last if plan else schedule.last_fired_at
    schedule.next_fire_at = timing.next_after(
        max(last, now) if schedule.catch_up != "all" else last
    )
    schedule.updated_at = now
    return fired


def _record_failure(
    sessions: db.Sessions, schedule_id: uuid.UUID, now: datetime | None, error: Exception
) -> bool:
    """Record the schedule's due fire times as failed and move it past them. Inbox files a
    failed firing claimed stay claimed; the next firing imports them. False when even this
    failed (the tick then stops until its next run)."""
    message = error.message if isinstance(error, ConveyorError) else "internal error; see logs"
    detail = {"code": getattr(error, "code", "internal_error"), "message": message[:500]}
    try:
        with db.transaction(sessions) as session:
            schedule = session.scalar(
                sa.select(Schedule)
                .where(Schedule.id == schedule_id)
                .with_for_update(skip_locked=True)
            )
            current = now or session.scalar(sa.select(sa.func.now()))
            if schedule is None or current is None or schedule.next_fire_at > current:
                return True  # another process handled it meanwhile
            timing = timing_of(schedule)
            due = _recent_due(schedule, timing, current)
            for fire_time in due[-MAX_SKIPPED_RECORDED:]:
                _record(session, schedule, fire_time, FAILED, detail)
            schedule.last_fired_at = due[-1] if due else schedule.last_fired_at
            schedule.next_fire_at = timing.next_after(current)
            schedule.updated_at = current
    except Exception:
        log.exception("schedules.failure_not_recorded", schedule_id=str(schedule_id))
        return False
    return True


def _tick_one(
    sessions: db.Sessions, settings: Settings, now: datetime | None, result: TickResult
) -> bool:
    """Handle one due schedule in a transaction of its own; False when none is due (or
    a failure could not even be recorded)."""
    schedule_id: uuid.UUID | None = None
    try:
        with db.transaction(sessions) as session:
            schedule = _lock_due(session, now, imports=settings.import_inbox is not None)
            if schedule is None:
                return False
            schedule_id = schedule.id
            current = now or session.scalar(sa.select(sa.func.now()))
            assert current is not None
            processed = _handle(session, schedule, current, settings, result)
    except DependencyUnavailable:
        raise  # nothing was decided; the next tick tries again
    except Exception as error:
        log.exception("schedules.firing_failed", schedule_id=str(schedule_id))
        if schedule_id is None or not _record_failure(sessions, schedule_id, now, error):
            return False
        result.firings[FAILED] = result.firings.get(FAILED, 0) + 1
        return True
    result.schedules += 1
    # Committed: this firing's inbox files are imported; file them under processed/.
    if settings.import_inbox is not None:
        for fire_time in processed:
            inbox.mark_processed(settings.import_inbox, schedule_id, fire_time)
    return True


def tick(
    sessions: db.Sessions,
    settings: Settings,
    *,
    publisher: JobPublisher | None = None,
    now: datetime | None = None,
    max_schedules: int = 100,
) -> TickResult:
    """Fire every due schedule (up to ``max_schedules``). ``now`` defaults to the database's
    clock; tests pass one to play hours in an instant."""
    result = TickResult()
    for _ in range(max_schedules):
        if not _tick_one(sessions, settings, now, result):
            break
    if publisher is not None and result.messages:
        dispatch_batch(sessions, publisher, result.messages)
    if result.schedules:
        log.info("schedules.tick", schedules=result.schedules, firings=result.firings)
    return result
