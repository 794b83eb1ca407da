"""Retention on real PostgreSQL: which jobs go (finished, older than the setting) with their
events, logs and rejected rows, which stay, and what a firing keeps of a purged job."""

from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa

from core import api_keys, db
from core.api_keys import Role
from core.lifecycle.retention import purge_finished
from core.models import ImportRowError, Job, JobEvent, JobLog, ScheduleFiring
from core.schedules import store
from core.schedules.tick import tick
from core.settings import Settings
from tests.integration.test_job_store import new_job


def age(sessions: db.Sessions, job_id: uuid.UUID, *, status: str, days: float) -> None:
    """Make a job ``status``, created and finished ``days`` ago (raw SQL: the state machine
    trigger only guards status changes, and this is test setup)."""
    with db.transaction(sessions) as session:
        session.execute(
            sa.text(
                "UPDATE jobs SET status = :status, "
                "created_at = now() - make_interval(secs => :days * 86400), "
                "finished_at = CASE WHEN :status IN ('succeeded', 'failed', 'cancelled') "
                "THEN now() - make_interval(secs => :days * 86400) END WHERE id = :id"
            ).bindparams(status=status, days=days, id=job_id)
        )


def count(sessions: db.Sessions, model: type, job_id: uuid.UUID) -> int:
    with db.transaction(sessions) as session:
        column = model.job_id if model is not Job else Job.id  # type: ignore[attr-defined]
        return int(session.scalar(sa.select(sa.func.count()).where(column == job_id)) or 0)


def test_purge_deletes_old_finished_jobs_with_their_rows_and_keeps_the_rest(
    sessions: db.Sessions,
) -> None:
    cases = {
        "old_succeeded": ("running", "succeeded", 31.0, True),
        "old_failed": ("running", "failed", 40.0, True),
        "old_cancelled": ("queued", "cancelled", 90.0, True),
        "recent_succeeded": ("running", "succeeded", 29.0, False),
        "old_running": (None, "running", 90.0, False),
        "old_queued": (None, "queued", 90.0, False),
    }
    ids = {}
    for name, (via, status, days, _) in cases.items():
        job_id = new_job(sessions)
        if via == "running":
            age(sessions, job_id, status="running", days=days)
        ids[name] = job_id
        age(sessions, job_id, status=status, days=days)
        with db.transaction(sessions) as session:
            session.add(JobEvent(job_id=job_id, type="note", attempt=1, data={}))
            session.add(JobLog(job_id=job_id, attempt=1, event="line", line="x", data={}))
            session.add(ImportRowError(job_id=job_id, row=2, code="required", message="m"))

    purged = purge_finished(sessions, retention_days=30, batch_rows=2)
    assert purged.jobs == 3
    assert purged.more is False
    for name, (_, _, _, gone) in cases.items():
        expected = 0 if gone else 1
        for model in (Job, JobEvent, JobLog, ImportRowError):
            assert count(sessions, model, ids[name]) >= expected, (name, model)
            if gone:
                assert count(sessions, model, ids[name]) == 0, (name, model)


def test_a_firing_outlives_its_purged_job(sessions: db.Sessions, settings: Settings) -> None:
    """schedule_firings.job_id is ON DELETE SET NULL: the firing (the record that its fire
    time was decided, which stops it firing again) stays when retention deletes its job.
    CASCADE would delete the firing with the job, RESTRICT would make the purge fail."""
    with db.transaction(sessions) as session:
        owner, _ = api_keys.create_key(
            session, name="ops", role=Role.operator, pepper=settings.secret_key.get_secret_value()
        )
        schedule = store.create(
            session,
            name="hourly",
            timing=store.check_timing(None, 3600, "UTC"),
            job={"kind": "noop", "params": {}},
            owner_id=owner.id,
            catch_up="all",
            overlap="allow",
        )
        schedule_id, first = schedule.id, schedule.next_fire_at
    tick(sessions, settings, now=first + timedelta(seconds=1))
    with db.transaction(sessions) as session:
        (fired,) = session.scalars(
            sa.select(ScheduleFiring).where(ScheduleFiring.schedule_id == schedule_id)
        )
        job_id, fire_time = fired.job_id, fired.fire_time
    assert job_id is not None
    age(sessions, job_id, status="running", days=31)
    age(sessions, job_id, status="succeeded", days=31)

    assert purge_finished(sessions, retention_days=30, batch_rows=10).jobs == 1
    assert count(sessions, Job, job_id) == 0
    with db.transaction(sessions) as session:
        kept = session.execute(
            sa.select(ScheduleFiring.fire_time, ScheduleFiring.status, ScheduleFiring.job_id).where(
                ScheduleFiring.schedule_id == schedule_id
            )
        ).all()
    assert [tuple(row) for row in kept] == [(fire_time, "created", None)]
