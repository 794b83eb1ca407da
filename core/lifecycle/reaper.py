"""The lease reaper: jobs whose worker died or hung (their lease expired) are put back and
published again at once, or failed when they ran out of time or attempts.

It runs in every worker and API process (core.lifecycle.recovery), never as a task that could
wait behind jobs. Expired rows are taken FOR UPDATE SKIP LOCKED, so any number of reapers
split the work and each job is handled once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from core import db
from core.broker.publisher import JobPublisher
from core.broker.relay import relay_undispatched
from core.errors import TimeLimitExceeded
from core.lifecycle.clock import now
from core.lifecycle.events import add_event
from core.lifecycle.leases import ATTEMPTS_EXHAUSTED, exhausted_values, failed_values
from core.lifecycle.states import JobStatus
from core.models import Job

log = structlog.get_logger(__name__)

TIMED_OUT_MESSAGE = "The job ran past its time limit and its worker was stopped."


@dataclass
class Reaped:
    requeued: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    exhausted: list[str] = field(default_factory=list)


def _fail(
    session: Session,
    expired: sa.ScalarSelect[uuid.UUID],
    condition: sa.ColumnElement[bool],
    values: dict[str, Any],
    code: str,
) -> list[str]:
    rows = session.execute(
        sa.update(Job)
        .execution_options(synchronize_session=False)
        .where(Job.id.in_(expired), condition)
        .values(values)
        .returning(Job.id, Job.attempt)
    ).all()
    for job_id, attempt in rows:
        add_event(session, job_id, "status", attempt, status="failed", code=code)
    return [str(job_id) for job_id, _ in rows]


def requeue_expired(session: Session, *, limit: int) -> Reaped:
    """Handle running jobs whose lease expired: past their hard deadline → failed
    ``time_limit_exceeded`` (the pool process was killed for time, not lost); out of attempts
    → failed ``attempts_exhausted``; otherwise back to queued and undispatched."""
    expired = (
        sa.select(Job.id)
        .where(Job.status == JobStatus.running.value, Job.lease_expires_at < now())
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    reaped = Reaped()
    # Each UPDATE re-reads ``expired``: rows an earlier one changed are no longer running.
    reaped.timed_out = _fail(
        session,
        expired,
        Job.run_deadline_at <= now(),
        failed_values(TimeLimitExceeded.code, TIMED_OUT_MESSAGE),
        TimeLimitExceeded.code,
    )
    reaped.exhausted = _fail(
        session,
        expired,
        Job.attempt >= Job.max_attempts,
        exhausted_values(),
        ATTEMPTS_EXHAUSTED,
    )
    requeued = session.execute(
        sa.update(Job)
        .execution_options(synchronize_session=False)
        .where(Job.id.in_(expired))
        .values(
            status=JobStatus.queued.value,
            dispatched_at=None,
            lease_owner=None,
            lease_expires_at=None,
            run_deadline_at=None,
            updated_at=now(),
        )
        .returning(Job.id, Job.attempt)
    ).all()
    for job_id, attempt in requeued:
        add_event(session, job_id, "status", attempt, status="queued", reason="lease_expired")
    reaped.requeued = [str(job_id) for job_id, _ in requeued]
    return reaped


def reap(sessions: db.Sessions, publisher: JobPublisher, *, limit: int = 500) -> Reaped:
    """One reaper pass; requeued jobs are published at once (not at the next relay tick), so
    recovery takes about one lease plus one reaper interval."""
    with db.transaction(sessions) as session:
        reaped = requeue_expired(session, limit=limit)
    if reaped.requeued or reaped.timed_out or reaped.exhausted:
        log.warning(
            "reaper.pass",
            requeued=reaped.requeued,
            timed_out=reaped.timed_out,
            exhausted=reaped.exhausted,
        )
    if reaped.requeued:
        relay_undispatched(sessions, publisher)
    return reaped
