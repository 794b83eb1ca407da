"""Deployment limits held in PostgreSQL: a global cap on running deployments and a lock per
target (``host:port``).

Both are read from the ``jobs`` table itself: a deployment holds its slot and its targets
while it is ``running`` with a live lease. So they are released by whatever ends the run —
the finishing transaction, or the lease expiring after a crash — and nothing can be left
locked. Admission decisions are serialized by one transaction-level advisory lock, taken
by the claim's admission check and by the finisher's wake-up: either a finishing job's
commit is visible to the check, or the job it refused is already waiting when the finisher
wakes the waiting ones.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.deployments.spec import KIND
from core.lifecycle import admission
from core.lifecycle.admission import CONCURRENCY_LIMIT, TARGET_BUSY, Refusal
from core.lifecycle.clock import now
from core.lifecycle.states import JobStatus
from core.models import DeploymentTarget, Job

# pg_advisory_xact_lock key shared by every deployment admission and wake-up ("deploy").
ADMISSION_LOCK_KEY = 0x6465_706C_6F79


def record_targets(session: Session, *, job_id: uuid.UUID, lock_keys: list[str]) -> None:
    """At submit, in the job's own transaction: the targets its lock is on."""
    session.execute(
        sa.insert(DeploymentTarget), [{"job_id": job_id, "target": key} for key in lock_keys]
    )


def _lock(session: Session) -> None:
    session.execute(sa.select(sa.func.pg_advisory_xact_lock(ADMISSION_LOCK_KEY)))


def _holding(job_id: uuid.UUID) -> sa.ColumnElement[bool]:
    """Other deployments that hold their slot and targets now."""
    return sa.and_(
        Job.kind == KIND,
        Job.status == JobStatus.running.value,
        Job.lease_expires_at > now(),
        Job.id != job_id,
    )


class DeploymentAdmission:
    """The ``core.lifecycle.admission.Admission`` of deployments."""

    def __init__(self, *, max_running: int) -> None:
        self.max_running = max_running

    def refuse(self, session: Session, job_id: uuid.UUID) -> Refusal | None:
        _lock(session)
        mine = sa.select(DeploymentTarget.target).where(DeploymentTarget.job_id == job_id)
        busy = session.execute(
            sa.select(DeploymentTarget.target, Job.id)
            .join(Job, Job.id == DeploymentTarget.job_id)
            .where(_holding(job_id), DeploymentTarget.target.in_(mine))
            .order_by(Job.started_at)
            .limit(1)
        ).first()
        if busy is not None:
            return Refusal(TARGET_BUSY, {"target": busy.target, "blocking_job_id": str(busy.id)})
        running = list(
            session.scalars(
                sa.select(Job.id)
                .where(_holding(job_id))
                .order_by(Job.started_at)
                .limit(self.max_running)
            )
        )
        if len(running) >= self.max_running:
            return Refusal(
                CONCURRENCY_LIMIT,
                {"max_running": self.max_running, "blocking_job_id": str(running[0])},
            )
        return None

    def released(self, session: Session, job_id: uuid.UUID) -> None:
        _lock(session)
        admission.wake(session, reasons=admission.ADMISSION_REASONS, kinds=[KIND])
