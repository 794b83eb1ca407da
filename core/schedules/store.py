"""Schedules as rows: create, read, change, pause, resume, delete, and their firings.
Functions flush, never commit (the caller's ``db.transaction`` decides)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from core.errors import Conflict, InvalidRequest, NotFound
from core.models import Job, Schedule, ScheduleFiring
from core.schedules.timing import Timing, check_cron, zone

MIN_INTERVAL_SECONDS = 1.0
MAX_INTERVAL_SECONDS = 366 * 24 * 3600.0
# The unique index on schedules.name (core.db's naming convention).
NAME_UNIQUE = "uq_schedules_name"


class ScheduleNameTaken(Conflict):
    """A schedule with this name exists."""

    code = "schedule_name_taken"


@dataclass(frozen=True)
class TimingSpec:
    cron: str | None
    interval_seconds: float | None
    timezone: str


def check_timing(cron: str | None, interval_seconds: float | None, timezone: str) -> TimingSpec:
    """Exactly one of a valid cron expression or an interval, and an IANA time zone;
    InvalidRequest naming the field otherwise."""
    if (cron is None) == (interval_seconds is None):
        raise InvalidRequest(
            "Give either cron or interval_seconds (exactly one).", where={"field": "cron"}
        )
    try:
        zone(timezone)
    except ValueError as error:
        raise InvalidRequest(str(error), where={"field": "timezone"}) from None
    if cron is not None:
        try:
            cron = check_cron(cron)
        except ValueError as error:
            raise InvalidRequest(str(error), where={"field": "cron"}) from None
    if interval_seconds is not None and not (
        MIN_INTERVAL_SECONDS <= interval_seconds <= MAX_INTERVAL_SECONDS
    ):
        raise InvalidRequest(
            f"interval_seconds must be between {MIN_INTERVAL_SECONDS:g} and "
            f"{MAX_INTERVAL_SECONDS:g}.",
            where={"field": "interval_seconds"},
        )
    return TimingSpec(cron, interval_seconds, timezone)


def _db_now(session: Session) -> datetime:
    now: datetime | None = session.scalar(sa.select(sa.func.now()))
    assert now is not None
    return now


def create(
    session: Session,
    *,
    name: str,
    timing: TimingSpec,
    job: dict[str, Any],
    owner_id: uuid.UUID,
    catch_up: str,
    overlap: str,
    paused: bool = False,
) -> Schedule:
    now = _db_now(session)
    first = Timing(timing.cron, timing.interval_seconds, timing.timezone, now).next_after(now)
    schedule: Schedule | None = session.scalar(
        pg_insert(Schedule)
        .values(
            id=uuid.uuid4(),
            name=name,
            cron=timing.cron,
            interval_seconds=timing.interval_seconds,
            timezone=timing.timezone,
            job=job,
            owner_id=owner_id,
            catch_up=catch_up,
            overlap=overlap,
            paused=paused,
            anchor_at=now,
            next_fire_at=first,
        )
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(Schedule)
    )
    if schedule is None:
        raise ScheduleNameTaken(
            f"A schedule named {name!r} already exists.", where={"field": "name"}
        )
    return schedule


def get(session: Session, schedule_id: uuid.UUID, *, lock: bool = False) -> Schedule:
    query = sa.select(Schedule).where(Schedule.id == schedule_id)
    schedule: Schedule | None = session.scalar(query.with_for_update() if lock else query)
    if schedule is None:
        raise NotFound(f"Schedule {schedule_id} not found.", where={"path": "schedule_id"})
    return schedule


def list_all(session: Session, *, limit: int, name: str | None = None) -> list[Schedule]:
    """By name; ``name`` finds the one schedule so named (through its unique index)."""
    query = sa.select(Schedule).order_by(Schedule.name).limit(limit)
    if name is not None:
        query = query.where(Schedule.name == name)
    return list(session.scalars(query))


def _restart(schedule: Schedule, now: datetime) -> None:
    """Fire times count from now: after a change of timing, or a resume (what fell due
    while paused was paused on purpose, not missed)."""
    schedule.anchor_at = now
    timing = Timing(schedule.cron, schedule.interval_seconds, schedule.timezone, now)
    schedule.next_fire_at = timing.next_after(now)
    schedule.updated_at = now


def _name_taken(error: sa_exc.IntegrityError) -> bool:
    return getattr(getattr(error.orig, "diag", None), "constraint_name", None) == NAME_UNIQUE


def update(
    session: Session,
    schedule: Schedule,
    *,
    timing: TimingSpec | None = None,
    changes: dict[str, Any],
) -> Schedule:
    """Apply ``changes`` (name, job, owner_id, catch_up, overlap) and a new timing to
    ``schedule``, which the caller read with ``get(lock=True)``. A name already taken is
    left to the unique index, which also catches a rename racing this one."""
    # Read the clock before changing anything: the query would autoflush the new name.
    now = _db_now(session)
    for key, value in changes.items():
        setattr(schedule, key, value)
    if timing is not None:
        schedule.cron = timing.cron
        schedule.interval_seconds = timing.interval_seconds
        schedule.timezone = timing.timezone
        _restart(schedule, now)
    else:
        schedule.updated_at = now
    try:
        session.flush()
    except sa_exc.IntegrityError as error:
        if not _name_taken(error):
            raise
        # changes["name"], not schedule.name: the failed flush expired the row's attributes.
        raise ScheduleNameTaken(
            f"A schedule named {changes.get('name')!r} already exists.", where={"field": "name"}
        ) from error
    return schedule


def set_paused(session: Session, schedule_id: uuid.UUID, *, paused: bool) -> Schedule:
    schedule = get(session, schedule_id, lock=True)
    if schedule.paused and not paused:
        _restart(schedule, _db_now(session))
    schedule.paused = paused
    session.flush()
    return schedule


def delete(session: Session, schedule_id: uuid.UUID) -> None:
    """The schedule and its firings; its jobs stay (their schedule_id becomes NULL)."""
    get(session, schedule_id)
    session.execute(sa.delete(Schedule).where(Schedule.id == schedule_id))


@dataclass(frozen=True)
class Firing:
    fire_time: datetime
    status: str
    job_id: uuid.UUID | None
    job_ids: list[uuid.UUID]
    detail: dict[str, Any]
    decided_at: datetime


def _own_first(job_id: uuid.UUID | None, job_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """The firing's own job_id first, then the others (one per inbox file)."""
    return sorted(job_ids, key=lambda other: other != job_id)


def firings(
    session: Session, schedule_id: uuid.UUID, *, limit: int, before: datetime | None
) -> tuple[list[Firing], datetime | None]:
    """Newest first, keyset-paginated on fire_time; with every job each firing made (an
    inbox import makes one per file)."""
    get(session, schedule_id)
    query = (
        sa.select(ScheduleFiring)
        .where(ScheduleFiring.schedule_id == schedule_id)
        .order_by(ScheduleFiring.fire_time.desc())
        .limit(limit + 1)
    )
    if before is not None:
        query = query.where(ScheduleFiring.fire_time < before)
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    jobs: dict[datetime, list[uuid.UUID]] = {}
    if rows:
        found = session.execute(
            sa.select(Job.fire_time, Job.id)
            .where(
                Job.schedule_id == schedule_id,
                Job.fire_time.in_([row.fire_time for row in rows]),
            )
            .order_by(Job.created_at, Job.id)
        )
        for fire_time, job_id in found:
            if fire_time is not None:
                jobs.setdefault(fire_time, []).append(job_id)
    page = [
        Firing(
            fire_time=row.fire_time,
            status=row.status,
            job_id=row.job_id,
            job_ids=_own_first(row.job_id, jobs.get(row.fire_time, [])),
            detail=row.detail,
            decided_at=row.created_at,
        )
        for row in rows
    ]
    return page, (rows[-1].fire_time if more else None)
