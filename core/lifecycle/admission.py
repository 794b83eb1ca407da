"""Holding a queued job back on purpose (a limit is reached) without holding a worker slot.

A job kind may have an ``Admission``. The claim asks it first, in the claim's transaction:
if it refuses, the job is not claimed, stays ``queued`` with a ``waiting_reason`` (so the
relay leaves it alone: core.lifecycle.outbox), and the delivery is acknowledged, so the
worker's slot is free at once. The job is offered again — reason cleared, back in the
outbox — when its kind releases something (``Admission.released``, called in the finishing
transaction of a job of that kind) and, as a safety net for a finisher that crashed or a
lease that expired, by the recovery loop once it has waited ``waiting_recheck_seconds``.
Only the reasons below are cleared that way; a paused queue's reason is cleared by its
resume (core.queues.control), through the same ``wake``.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.lifecycle.clock import in_seconds, now
from core.lifecycle.events import add_event
from core.lifecycle.states import JobStatus
from core.models import Job, JobEvent

WAITING_EVENT = "waiting"
CONCURRENCY_LIMIT = "concurrency_limit"
TARGET_BUSY = "target_busy"
ADMISSION_REASONS = (CONCURRENCY_LIMIT, TARGET_BUSY)


@dataclass(frozen=True)
class Refusal:
    """Why a job cannot start now: ``reason`` goes to ``jobs.waiting_reason``; ``detail``
    (e.g. the blocking job's id) to the job's ``waiting`` event."""

    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


class Admission(Protocol):
    def refuse(self, session: Session, job_id: uuid.UUID) -> Refusal | None:
        """In the claim's transaction, before the claim: None lets the job start."""

    def released(self, session: Session, job_id: uuid.UUID) -> None:
        """In the transaction that finishes ``job_id``: wake whatever it held back."""


def hold(session: Session, *, job_id: uuid.UUID, refusal: Refusal) -> bool:
    """Mark a queued job as waiting; a ``waiting`` event is added when the reason or its
    detail changed (not on every recheck). False when the job is not queued any more."""
    row = session.execute(
        sa.update(Job)
        .execution_options(synchronize_session=False)
        .where(Job.id == job_id, Job.status == JobStatus.queued.value)
        .values(waiting_reason=refusal.reason, dispatched_at=None, updated_at=now())
        .returning(Job.attempt)
    ).first()
    if row is None:
        return False
    data = {"reason": refusal.reason, **refusal.detail}
    last = session.scalar(
        sa.select(JobEvent.data)
        .where(JobEvent.job_id == job_id, JobEvent.type == WAITING_EVENT)
        .order_by(JobEvent.id.desc())
        .limit(1)
    )
    if last != data:
        add_event(session, job_id, WAITING_EVENT, row.attempt, **data)
    return True


def wake(
    session: Session,
    *,
    reasons: Collection[str],
    kinds: Collection[str] | None = None,
    older_than: float | None = None,
) -> int:
    """Put queued jobs that wait for one of ``reasons`` back in the outbox, to be offered
    again: only jobs of ``kinds`` if given, only those last refused ``older_than`` seconds
    ago or more if given. The relay publishes them on its next pass (``updated_at`` is left
    alone so no grace delays it). The one way a held job goes back: a kind's release, the
    recheck, and a paused queue's resume (core.queues.control). Returns how many."""
    conditions = [Job.status == JobStatus.queued.value, Job.waiting_reason.in_(reasons)]
    if kinds is not None:
        conditions.append(Job.kind.in_(kinds))
    if older_than is not None:
        conditions.append(Job.updated_at < in_seconds(-older_than))
    result = session.execute(
        sa.update(Job)
        .execution_options(synchronize_session=False)
        .where(*conditions)
        .values(waiting_reason=None, dispatched_at=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def recheck_waiting(session: Session, *, older_than: float) -> int:
    """Put back in the outbox every job a limit has held ``older_than`` seconds since it was
    last refused (the relay's safety net)."""
    return wake(session, reasons=ADMISSION_REASONS, older_than=older_than)
