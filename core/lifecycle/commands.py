"""Every change of a job's state. Each transition is one conditional UPDATE ... RETURNING,
fenced by status (and, for workers, by the lease). Functions flush, never commit: the caller's
``db.transaction`` decides, so a unit's effects, progress and checkpoint commit together.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from core.api_keys import Principal
from core.errors import IdempotencyConflict, InvalidRequest, InvalidTransition, LeaseLost
from core.lifecycle.admission import Admission, hold
from core.lifecycle.clock import in_seconds, now
from core.lifecycle.events import add_event
from core.lifecycle.idempotency import request_fingerprint
from core.lifecycle.queries import get_job
from core.lifecycle.states import RETRYABLE, TERMINAL, JobStatus
from core.models import Job

ATTEMPTS_EXHAUSTED = "attempts_exhausted"


@dataclass(frozen=True)
class Lease:
    """Proof that one worker owns one attempt of a job; every worker write is fenced by it."""

    job_id: uuid.UUID
    owner: str
    attempt: int


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool


def submit_job(
    session: Session,
    *,
    kind: str,
    params: dict[str, Any],
    principal_id: uuid.UUID | None,
    max_attempts: int,
    idempotency_key: str | None = None,
    request_id: str | None = None,
    fingerprint_extra: dict[str, Any] | None = None,
) -> Submitted:
    """Insert a queued, undispatched job, or return the one this Idempotency-Key made."""
    fingerprint = request_fingerprint({"kind": kind, "params": params, **(fingerprint_extra or {})})
    values = {
        "id": uuid.uuid4(),
        "kind": kind,
        "params": params,
        "principal_id": principal_id,
        "idempotency_key": idempotency_key,
        "request_fingerprint": fingerprint,
        "request_id": request_id,
        "max_attempts": max_attempts,
        "status": JobStatus.queued.value,
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


def claim_job(
    session: Session,
    *,
    job_id: uuid.UUID,
    owner: str,
    lease_seconds: float,
    admission: Admission | None = None,
) -> Lease | None:
    """Take the job for one attempt. Exactly one concurrent delivery wins; the rest get None.

    Claimable: queued, or running with an expired lease (its worker died). ``attempt`` is
    counted here, so a crash still uses up an attempt. A kind with an ``admission`` may
    refuse first: the job then stays queued with its waiting_reason (core.lifecycle.admission).
    """
    if admission is not None:
        refusal = admission.refuse(session, job_id)
        if refusal is not None:
            hold(session, job_id=job_id, refusal=refusal)
            return None
    claimable = sa.or_(
        Job.status == JobStatus.queued.value,
        sa.and_(Job.status == JobStatus.running.value, Job.lease_expires_at < now()),
    )
    job = session.scalar(
        sa.update(Job)
        .execution_options(synchronize_session=False)
        .where(Job.id == job_id, claimable, ~Job.cancel_requested, Job.attempt < Job.max_attempts)
        .values(
            status=JobStatus.running.value,
            attempt=Job.attempt + 1,
            lease_owner=owner,
            lease_expires_at=in_seconds(lease_seconds),
            started_at=sa.func.coalesce(Job.started_at, now()),
            dispatched_at=sa.func.coalesce(Job.dispatched_at, now()),
            waiting_reason=None,
            updated_at=now(),
        )
        .returning(Job)
    )
    if job is None:
        _settle_unclaimable(session, job_id=job_id, claimable=claimable)
        return None
    add_event(session, job.id, "status", job.attempt, status=JobStatus.running.value, worker=owner)
    return Lease(job_id=job.id, owner=owner, attempt=job.attempt)


def _settle_unclaimable(
    session: Session, *, job_id: uuid.UUID, claimable: sa.ColumnElement[bool]
) -> None:
    """A delivery that cannot claim may still finish the job: cancelled while waiting, or out
    of attempts."""
    cancelled = session.scalar(
        sa.update(Job)
        .execution_options(synchronize_session=False)
        .where(Job.id == job_id, claimable, Job.cancel_requested)
        .values(
            status=JobStatus.cancelled.value,
            finished_at=now(),
            updated_at=now(),
            lease_owner=None,
            lease_expires_at=None,
        )
        .returning(Job.attempt)
    )
    if cancelled is not None:
        add_event(session, job_id, "status", cancelled, status=JobStatus.cancelled.value)
        return
    exhausted = session.scalar(
        sa.update(Job)
        .execution_options(synchronize_session=False)
        .where(Job.id == job_id, claimable, Job.attempt >= Job.max_attempts)
        .values(_exhausted_values())
        .returning(Job.attempt)
    )
    if exhausted is not None:
        add_event(
            session,
            job_id,
            "status",
            exhausted,
            status=JobStatus.failed.value,
            code=ATTEMPTS_EXHAUSTED,
        )


def _exhausted_values() -> dict[str, Any]:
    return {
        "status": JobStatus.failed.value,
        "error_code": ATTEMPTS_EXHAUSTED,
        "error_message": "The job's worker was lost on every attempt; giving up.",
        "finished_at": now(),
        "updated_at": now(),
        "lease_owner": None,
        "lease_expires_at": None,
    }


def _fenced(lease: Lease) -> list[sa.ColumnElement[bool]]:
    return [
        Job.id == lease.job_id,
        Job.status == JobStatus.running.value,
        Job.lease_owner == lease.owner,
        Job.attempt == lease.attempt,
    ]


def load_claimed(session: Session, *, lease: Lease) -> Job:
    """The job this lease owns. Right after ``claim_job`` in the same transaction the row is
    already in the session (from the claim's RETURNING), so no query is sent."""
    job = session.get(Job, lease.job_id)
    if (
        job is None
        or job.status != JobStatus.running.value
        or job.lease_owner != lease.owner
        or job.attempt != lease.attempt
    ):
        raise LeaseLost()
    return job


def save_progress(
    session: Session,
    *,
    lease: Lease,
    lease_seconds: float,
    done: int,
    total: int | None = None,
    failed: int = 0,
    checkpoint: dict[str, Any] | None = None,
) -> bool:
    """Record progress and checkpoint, renewing the lease. Returns whether cancel was requested.

    Raises LeaseLost when another attempt owns the job, so a zombie worker cannot write.
    """
    values: dict[str, Any] = {
        "progress_done": done,
        "progress_failed": failed,
        "lease_expires_at": in_seconds(lease_seconds),
        "updated_at": now(),
    }
    if total is not None:
        values["progress_total"] = total
    if checkpoint is not None:
        values["checkpoint"] = checkpoint
    cancel = session.scalar(
        sa.update(Job)
        .execution_options(synchronize_session=False)
        .where(*_fenced(lease))
        .values(values)
        .returning(Job.cancel_requested)
    )
    if cancel is None:
        raise LeaseLost()
    return bool(cancel)


def renew_lease(session: Session, *, lease: Lease, lease_seconds: float) -> bool:
    """Extend the lease (heartbeat); returns whether cancel was requested. LeaseLost when
    another attempt owns the job."""
    cancel = session.scalar(
        sa.update(Job)
        .execution_options(synchronize_session=False)
        .where(*_fenced(lease))
        .values(lease_expires_at=in_seconds(lease_seconds))
        .returning(Job.cancel_requested)
    )
    if cancel is None:
        raise LeaseLost()
    return bool(cancel)


def finish_job(
    session: Session,
    *,
    lease: Lease,
    status: JobStatus,
    result: dict[str, Any] | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> None:
    if status not in TERMINAL:
        raise ValueError(f"{status} is not terminal")
    finished = session.scalar(
        sa.update(Job)
        .execution_options(synchronize_session=False)
        .where(*_fenced(lease))
        .values(
            status=status.value,
            result=result,
            error_code=error_code,
            error_message=error_message,
            finished_at=now(),
            updated_at=now(),
            lease_owner=None,
            lease_expires_at=None,
        )
        .returning(Job.id)
    )
    if finished is None:
        raise LeaseLost()
    details = {"code": error_code, "message": error_message} if error_code else {}
    add_event(session, lease.job_id, "status", lease.attempt, status=status.value, **details)


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


def requeue_expired(session: Session, *, limit: int) -> tuple[list[Job], int]:
    """Put back running jobs whose lease expired (worker died or hung) so the relay
    re-dispatches them; fail those out of attempts. Returns (requeued, failed count)."""
    expired = (
        sa.select(Job.id)
        .where(Job.status == JobStatus.running.value, Job.lease_expires_at < now())
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    exhausted = list(
        session.execute(
            sa.update(Job)
            .execution_options(synchronize_session=False)
            .where(Job.id.in_(expired), Job.attempt >= Job.max_attempts)
            .values(_exhausted_values())
            .returning(Job.id, Job.attempt)
        )
    )
    for job_id, attempt in exhausted:
        add_event(
            session,
            job_id,
            "status",
            attempt,
            status=JobStatus.failed.value,
            code=ATTEMPTS_EXHAUSTED,
        )
    requeued = list(
        session.scalars(
            sa.update(Job)
            .execution_options(synchronize_session=False)
            .where(Job.id.in_(expired))
            .values(
                status=JobStatus.queued.value,
                dispatched_at=None,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now(),
            )
            .returning(Job)
        )
    )
    for job in requeued:
        add_event(
            session,
            job.id,
            "status",
            job.attempt,
            status=JobStatus.queued.value,
            reason="lease_expired",
        )
    return requeued, len(exhausted)
