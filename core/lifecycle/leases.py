"""A worker's side of a job: claim it, keep the lease alive, commit units, finish.

Every write here is fenced by the lease (``lease_owner`` + ``attempt``), so a worker that
lost its job (it was reaped while the worker hung) cannot write anything. Unit commits are
also fenced on ``unit_seq``: a unit retried after an uncertain COMMIT first asks whether it
already applied, instead of applying twice. Functions flush, never commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.errors import LeaseLost
from core.lifecycle.admission import Admission, hold
from core.lifecycle.clock import in_seconds, now
from core.lifecycle.events import add_event
from core.lifecycle.states import TERMINAL, JobStatus
from core.models import Job
from core.queues import control as queue_control

ATTEMPTS_EXHAUSTED = "attempts_exhausted"


@dataclass(frozen=True)
class Lease:
    """Proof that one worker owns one attempt of a job; every worker write is fenced by it."""

    job_id: uuid.UUID
    owner: str
    attempt: int


@dataclass(frozen=True)
class UnitState:
    """Where the current run stands, as committed: for a unit retried after an error at
    COMMIT to tell whether it already applied."""

    unit_seq: int
    checkpoint: dict[str, Any] | None
    cancel_requested: bool


def _lease_until(lease_seconds: float) -> sa.ColumnElement[Any]:
    """A lease never reaches past the attempt's hard deadline: a body still running then is
    killed (or, in a pool that cannot kill, fenced off) and the reaper fails the job."""
    return sa.func.least(in_seconds(lease_seconds), Job.run_deadline_at)


def claim_job(
    session: Session,
    *,
    job_id: uuid.UUID,
    queue: str,
    owner: str,
    lease_seconds: float,
    grace: float,
    admission: Admission | None = None,
) -> Lease | None:
    """Take the job for one attempt. Exactly one concurrent delivery wins; the rest get None.

    Claimable: queued, or running with an expired lease (its worker died). ``attempt`` is
    counted here, so a crash still uses up an attempt. The attempt's hard deadline is its
    time limit plus ``grace`` from now. A retry by the same owner (its first claim's COMMIT
    failed, but may have happened) gets its own lease back. A kind with an ``admission`` may
    refuse first, and so does a paused ``queue`` (the job's: core.queues.control): the job
    then stays queued with its waiting_reason (core.lifecycle.admission).
    """
    # A paused queue first: its jobs wait whatever their kind's own admission says. A retry
    # by the owner of the lease (its claim's COMMIT failed but happened) is never refused.
    refusal = queue_control.claim_refusal(session, queue)
    if refusal is None and admission is not None:
        refusal = admission.refuse(session, job_id)
    if refusal is not None and not _owned_by(session, job_id, owner):
        hold(session, job_id=job_id, refusal=refusal)
        return None
    claimable = sa.or_(
        Job.status == JobStatus.queued.value,
        sa.and_(Job.status == JobStatus.running.value, Job.lease_expires_at < now()),
    )
    deadline = now() + sa.func.make_interval(
        0, 0, 0, 0, 0, 0, Job.time_limit_seconds + sa.literal(grace)
    )
    job = session.scalar(
        sa.update(Job)
        .execution_options(synchronize_session=False)
        .where(Job.id == job_id, claimable, ~Job.cancel_requested, Job.attempt < Job.max_attempts)
        .values(
            status=JobStatus.running.value,
            attempt=Job.attempt + 1,
            lease_owner=owner,
            lease_expires_at=sa.func.least(in_seconds(lease_seconds), deadline),
            run_deadline_at=deadline,
            waiting_reason=None,
            started_at=sa.func.coalesce(Job.started_at, now()),
            dispatched_at=sa.func.coalesce(Job.dispatched_at, now()),
            updated_at=now(),
        )
        .returning(Job)
    )
    if job is not None:
        add_event(session, job.id, "status", job.attempt, status="running", worker=owner)
        return Lease(job_id=job.id, owner=owner, attempt=job.attempt)
    own = session.scalar(
        sa.update(Job)
        .execution_options(synchronize_session=False)
        .where(Job.id == job_id, Job.status == JobStatus.running.value, Job.lease_owner == owner)
        .values(lease_expires_at=_lease_until(lease_seconds), updated_at=now())
        .returning(Job)
    )
    if own is not None:
        return Lease(job_id=own.id, owner=owner, attempt=own.attempt)
    _settle_unclaimable(session, job_id=job_id, claimable=claimable)
    return None


def _owned_by(session: Session, job_id: uuid.UUID, owner: str) -> bool:
    owned = session.scalar(
        sa.select(Job.id).where(
            Job.id == job_id, Job.status == JobStatus.running.value, Job.lease_owner == owner
        )
    )
    return owned is not None


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
            waiting_reason=None,
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
        .values(exhausted_values())
        .returning(Job.attempt)
    )
    if exhausted is not None:
        add_event(session, job_id, "status", exhausted, status="failed", code=ATTEMPTS_EXHAUSTED)


def failed_values(code: str, message: str) -> dict[str, Any]:
    """The columns of a job the platform fails on its own (not its body)."""
    return {
        "status": JobStatus.failed.value,
        "error_code": code,
        "error_message": message,
        "finished_at": now(),
        "updated_at": now(),
        "lease_owner": None,
        "lease_expires_at": None,
        "waiting_reason": None,
    }


def exhausted_values() -> dict[str, Any]:
    return failed_values(
        ATTEMPTS_EXHAUSTED, "The job's worker was lost on every attempt; giving up."
    )


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


def renew_lease(session: Session, *, lease: Lease, lease_seconds: float) -> bool:
    """Extend the lease (the heartbeat). Returns whether cancel was requested; LeaseLost
    when the job is no longer this worker's."""
    cancel = session.scalar(
        sa.update(Job)
        .execution_options(synchronize_session=False)
        .where(*_fenced(lease))
        .values(lease_expires_at=_lease_until(lease_seconds))
        .returning(Job.cancel_requested)
    )
    if cancel is None:
        raise LeaseLost()
    return bool(cancel)


def unit_state(session: Session, *, lease: Lease) -> UnitState:
    """The committed unit count and checkpoint of this lease's job; LeaseLost if not ours."""
    row = session.execute(
        sa.select(Job.unit_seq, Job.checkpoint, Job.cancel_requested).where(*_fenced(lease))
    ).one_or_none()
    if row is None:
        raise LeaseLost()
    return UnitState(unit_seq=row[0], checkpoint=row[1], cancel_requested=bool(row[2]))


def save_progress(
    session: Session,
    *,
    lease: Lease,
    lease_seconds: float,
    unit_seq: int,
    done: int,
    total: int | None = None,
    failed: int = 0,
    checkpoint: dict[str, Any] | None = None,
) -> bool:
    """Record unit number ``unit_seq + 1`` with its progress and checkpoint, renewing the
    lease. Returns whether cancel was requested.

    Raises LeaseLost when another attempt owns the job (a zombie worker cannot write) or when
    the unit count moved on (this unit, or another, was already recorded).
    """
    values: dict[str, Any] = {
        "unit_seq": unit_seq + 1,
        "progress_done": done,
        "progress_failed": failed,
        "lease_expires_at": _lease_until(lease_seconds),
        "updated_at": now(),
    }
    if total is not None:
        values["progress_total"] = total
    if checkpoint is not None:
        values["checkpoint"] = checkpoint
    cancel = session.scalar(
        sa.update(Job)
        .execution_options(synchronize_session=False)
        .where(*_fenced(lease), Job.unit_seq == unit_seq)
        .values(values)
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
            run_deadline_at=None,
        )
        .returning(Job.id)
    )
    if finished is None:
        raise LeaseLost()
    details = {"code": error_code, "message": error_message} if error_code else {}
    add_event(session, lease.job_id, "status", lease.attempt, status=status.value, **details)
