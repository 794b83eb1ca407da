"""What clients do to jobs: submit, cancel, retry. Each transition is one conditional
UPDATE ... RETURNING fenced by status; functions flush, never commit (the caller's
``db.transaction`` decides). A worker's writes live in ``core.lifecycle.leases``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from core import tracing
from core.api_keys import Principal
from core.errors import IdempotencyConflict, InvalidRequest, InvalidTransition
from core.lifecycle.clock import now
from core.lifecycle.events import add_event
from core.lifecycle.idempotency import request_fingerprint
from core.lifecycle.queries import get_job
from core.lifecycle.states import RETRYABLE, TERMINAL, JobStatus
from core.models import Job
from core.queues import control as queue_control
from core.settings import Settings


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool


def time_limit(settings: Settings, kind: str, requested: float | None, *, field: str) -> float:
    """A job's run-time limit: what it asked for, within the operator's limit for its kind
    (which is also the default)."""
    maximum = settings.time_limit_for(kind)
    if requested is None:
        return maximum
    if requested > maximum:
        raise InvalidRequest(
            f"{field} may be at most {maximum:g} seconds for {kind} jobs.",
            where={"field": field},
        )
    return requested


def submit_job(
    session: Session,
    *,
    kind: str,
    params: dict[str, Any],
    principal_id: uuid.UUID | None,
    max_attempts: int,
    idempotency_key: str | None = None,
    time_limit_seconds: float,
    request_id: str | None = None,
    fingerprint_extra: dict[str, Any] | None = None,
    schedule_id: uuid.UUID | None = None,
    fire_time: datetime | None = None,
) -> Submitted:
    """Insert a queued, undispatched job, or return the one this Idempotency-Key made.
    ``time_limit_seconds`` bounds each attempt's run time (settings.time_limit_for(kind), or
    what the job asked for where its kind allows). A job of a paused queue is stored with
    ``waiting_reason`` queue_paused (core.queues.control). ``schedule_id`` and ``fire_time``
    name the schedule firing that made it."""
    fingerprint = request_fingerprint({"kind": kind, "params": params, **(fingerprint_extra or {})})
    trace_id, traceparent = tracing.new_job_trace()
    values = {
        "id": uuid.uuid4(),
        "kind": kind,
        "params": params,
        "principal_id": principal_id,
        "idempotency_key": idempotency_key,
        "request_fingerprint": fingerprint,
        "request_id": request_id,
        "trace_id": trace_id,
        "traceparent": traceparent,
        "max_attempts": max_attempts,
        "time_limit_seconds": time_limit_seconds,
        "status": JobStatus.queued.value,
        "waiting_reason": queue_control.paused_reason(kind),
        "schedule_id": schedule_id,
        "fire_time": fire_time,
    }
    insert = pg_insert(Job).values(values)
    if idempotency_key is not None:
        insert = insert.on_conflict_do_nothing(index_elements=["principal_id", "idempotency_key"])
    job = session.scalar(insert.returning(Job))
    if job is not None:
        add_event(session, job.id, "status", 0, status=JobStatus.queued.value)
        return Submitted(job=job, created=True)
    existing = session.scalar(
        sa.select(Job).where(
            Job.principal_id == principal_id, Job.idempotency_key == idempotency_key
        )
    )
    if existing is None:  # the conflicting row was deleted by retention in between
        raise InvalidRequest("Idempotency-Key raced with a deletion; try again.")
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict(
            f"Idempotency-Key {idempotency_key!r} was already used for a different request "
            f"(job {existing.id}).",
            where={"header": "Idempotency-Key"},
        )
    return Submitted(job=existing, created=False)


def request_cancel(session: Session, *, job_id: uuid.UUID, principal: Principal | None) -> Job:
    """A queued job is cancelled now; a running one is flagged and stops between units."""
    job = get_job(session, job_id=job_id, principal=principal)
    if JobStatus(job.status) in TERMINAL:
        raise InvalidTransition(f"Job {job_id} is already {job.status}.")
    updated: Job | None = session.scalar(
        sa.update(Job)
        # The job is already in the session (get_job): refresh it from RETURNING.
        .execution_options(synchronize_session=False, populate_existing=True)
        .where(Job.id == job_id, Job.status == JobStatus.queued.value)
        .values(
            status=JobStatus.cancelled.value,
            cancel_requested=True,
            waiting_reason=None,
            finished_at=now(),
            updated_at=now(),
        )
        .returning(Job)
    )
    if updated is not None:
        add_event(session, job_id, "status", updated.attempt, status=JobStatus.cancelled.value)
        return updated
    flagged: Job | None = session.scalar(
        sa.update(Job)
        # The job is already in the session (get_job): refresh it from RETURNING.
        .execution_options(synchronize_session=False, populate_existing=True)
        .where(Job.id == job_id, Job.status == JobStatus.running.value)
        .values(cancel_requested=True, updated_at=now())
        .returning(Job)
    )
    if flagged is None:
        raise InvalidTransition(f"Job {job_id} finished before it could be cancelled.")
    add_event(session, job_id, "cancel_requested", flagged.attempt)
    return flagged


def retry_job(
    session: Session, *, job_id: uuid.UUID, principal: Principal | None, attempts_budget: int
) -> Job:
    """Run a failed or cancelled job again from the start, as a new attempt."""
    get_job(session, job_id=job_id, principal=principal)
    job: Job | None = session.scalar(
        sa.update(Job)
        # get_job may have left the job in the session: refresh it from RETURNING.
        .execution_options(synchronize_session=False, populate_existing=True)
        .where(Job.id == job_id, Job.status.in_([s.value for s in RETRYABLE]))
        .values(
            status=JobStatus.queued.value,
            max_attempts=Job.attempt + attempts_budget,
            cancel_requested=False,
            waiting_reason=None,
            dispatched_at=None,
            finished_at=None,
            error_code=None,
            error_message=None,
            result=None,
            checkpoint=None,
            progress_done=0,
            progress_failed=0,
            progress_total=None,
            updated_at=now(),
        )
        .returning(Job)
    )
    if job is None:
        raise InvalidTransition(f"Only failed or cancelled jobs can be retried (job {job_id}).")
    add_event(session, job_id, "status", job.attempt, status=JobStatus.queued.value, retry=True)
    return job


def cancel_jobs_of_principal(session: Session, *, principal_id: uuid.UUID) -> int:
    """A revoked key's work stops: its queued jobs are cancelled now, its running jobs are
    flagged and stop between units. Returns how many jobs were affected."""
    queued = list(
        session.execute(
            sa.update(Job)
            .execution_options(synchronize_session=False)
            .where(Job.principal_id == principal_id, Job.status == JobStatus.queued.value)
            .values(
                status=JobStatus.cancelled.value,
                cancel_requested=True,
                finished_at=now(),
                updated_at=now(),
            )
            .returning(Job.id, Job.attempt)
        )
    )
    for job_id, attempt in queued:
        add_event(
            session, job_id, "status", attempt, status=JobStatus.cancelled.value, reason="key"
        )
    running = list(
        session.execute(
            sa.update(Job)
            .execution_options(synchronize_session=False)
            .where(
                Job.principal_id == principal_id,
                Job.status == JobStatus.running.value,
                ~Job.cancel_requested,
            )
            .values(cancel_requested=True, updated_at=now())
            .returning(Job.id, Job.attempt)
        )
    )
    for job_id, attempt in running:
        add_event(session, job_id, "cancel_requested", attempt, reason="key_revoked")
    return len(queued) + len(running)
