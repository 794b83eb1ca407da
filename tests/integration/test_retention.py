"""Retention on real PostgreSQL: which jobs go (finished, older than the setting) with their
events, logs and rejected rows, which stay, and what a firing keeps of a purged job."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from core import db
from core.lifecycle.retention import purge_finished
from core.models import ImportRowError, Job, JobEvent, JobLog
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
