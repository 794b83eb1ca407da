"""Pausing a queue: its jobs are still accepted, but wait ``queued`` with ``waiting_reason``
``queue_paused``; workers stop taking them without a restart; running jobs finish.

Three places keep a paused queue's jobs from running, so no race lets one through:

- submit stores the reason at once when the queue is paused (``paused_reason``), so the
  relay (which skips jobs with a reason: core.lifecycle.outbox) does not publish them;
- pausing marks the queue's unpublished jobs the same way;
- a message already in Redis (published before the pause) reaches a worker, whose claim
  refuses it (``claim_refusal``): the job stays queued and unpublished with the reason,
  and the message is acknowledged.

Resuming clears the reason and puts the jobs back in the outbox; the relay publishes them.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from core.broker.task_names import JOB_ROUTES, QUEUES, route_for
from core.errors import NotFound
from core.lifecycle import admission
from core.lifecycle.clock import now
from core.lifecycle.states import JobStatus
from core.models import Job, Queue

QUEUE_PAUSED = "queue_paused"


def kinds_of(queue: str) -> list[str]:
    return sorted(kind for kind, route in JOB_ROUTES.items() if route.queue == queue)


def check_queue(name: str) -> str:
    if name not in QUEUES:
        raise NotFound(
            f"No queue {name!r}; queues are {', '.join(QUEUES)}.", where={"path": "name"}
        )
    return name


def paused_reason(kind: str) -> sa.ScalarSelect[str]:
    """For an INSERT of a job of ``kind``: ``queue_paused`` while its queue is paused, else
    NULL, evaluated by PostgreSQL in the same statement (no extra round trip)."""
    return (
        sa.select(sa.literal(QUEUE_PAUSED, sa.Text))
        .where(Queue.name == route_for(kind).queue, Queue.paused)
        .scalar_subquery()
    )


def claim_refusal(session: Session, queue: str) -> admission.Refusal | None:
    """In the claim's transaction: refuse a job of ``queue`` (the job's, which the claiming
    task knows from its route) while it is paused."""
    paused = session.scalar(sa.select(Queue.paused).where(Queue.name == queue))
    if not paused:
        return None
    return admission.Refusal(QUEUE_PAUSED, {"queue": queue})


def pause(session: Session, *, name: str, principal_id: uuid.UUID | None) -> int:
    """Pause ``name``; returns how many unpublished jobs now wait for the resume."""
    check_queue(name)
    session.execute(
        pg_insert(Queue)
        .values(name=name, paused=True, paused_at=now(), paused_by=principal_id)
        .on_conflict_do_update(
            index_elements=["name"],
            set_={"paused": True, "paused_at": now(), "paused_by": principal_id},
            where=~Queue.paused,
        )
    )
    result = session.execute(
        sa.update(Job)
        .execution_options(synchronize_session=False)
        .where(
            Job.kind.in_(kinds_of(name)),
            Job.status == JobStatus.queued.value,
            Job.dispatched_at.is_(None),
            Job.waiting_reason.is_(None),
        )
        .values(waiting_reason=QUEUE_PAUSED)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def resume(session: Session, *, name: str) -> int:
    """Resume ``name``; its waiting jobs go back to the outbox. Returns how many."""
    check_queue(name)
    session.execute(
        sa.update(Queue)
        .where(Queue.name == name)
        .values(paused=False, paused_at=None, paused_by=None)
    )
    return admission.wake(session, reasons=[QUEUE_PAUSED], kinds=kinds_of(name))
