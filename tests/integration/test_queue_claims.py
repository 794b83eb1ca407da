"""Claims while a queue is paused, against real PostgreSQL: a message of the paused queue
(published before the pause) is refused and its job waits with ``queue_paused``; claims of
every other queue keep the one-statement fast path."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from core import db
from core.broker.task_names import DEFAULT_QUEUE, IMPORTS_QUEUE, route_for
from core.lifecycle import commands, lease_statements, leases
from core.lifecycle.clock import now
from core.models import Job, JobEvent
from core.queues import control as queue_control


def published_job(sessions: db.Sessions, kind: str = "noop") -> uuid.UUID:
    """A queued job whose message is already on the broker."""
    with db.transaction(sessions) as session:
        job = commands.submit_job(
            session,
            kind=kind,
            params={},
            principal_id=None,
            max_attempts=3,
            time_limit_seconds=60,
        ).job
        job.dispatched_at = now()
        return job.id


def pause(sessions: db.Sessions, queue: str) -> None:
    with db.transaction(sessions) as session:
        queue_control.pause(session, name=queue, principal_id=None)


def fast_claim(engine: sa.Engine, job_id: uuid.UUID, queue: str) -> lease_statements.Claimed | None:
    with db.autocommit(engine) as connection:
        return lease_statements.claim(
            connection, job_id=job_id, queue=queue, owner="w", lease_seconds=30, grace=5
        )


def complete_claim(sessions: db.Sessions, job_id: uuid.UUID, queue: str) -> leases.Lease | None:
    with db.transaction(sessions) as session:
        return leases.claim_job(
            session, job_id=job_id, queue=queue, owner="w", lease_seconds=30, grace=5
        )


def row(sessions: db.Sessions, job_id: uuid.UUID) -> Job:
    with db.transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_a_paused_queue_does_not_slow_the_claims_of_other_queues(
    sessions: db.Sessions, engine: sa.Engine
) -> None:
    job_id = published_job(sessions)
    pause(sessions, IMPORTS_QUEUE)

    claimed = fast_claim(engine, job_id, route_for("noop").queue)

    assert claimed is not None
    assert claimed.lease.attempt == 1
    assert row(sessions, job_id).status == "running"


def test_a_message_of_a_paused_queue_is_refused_and_its_job_waits(
    sessions: db.Sessions, engine: sa.Engine
) -> None:
    job_id = published_job(sessions)
    pause(sessions, DEFAULT_QUEUE)

    assert fast_claim(engine, job_id, DEFAULT_QUEUE) is None  # left to the complete path
    assert complete_claim(sessions, job_id, DEFAULT_QUEUE) is None

    job = row(sessions, job_id)
    assert (job.status, job.attempt, job.waiting_reason, job.dispatched_at) == (
        "queued",
        0,
        queue_control.QUEUE_PAUSED,
        None,
    )
    with db.transaction(sessions) as session:
        waiting = session.scalars(
            sa.select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.type == "waiting")
        ).all()
    assert waiting == [{"reason": queue_control.QUEUE_PAUSED, "queue": DEFAULT_QUEUE}]


def test_the_complete_claim_takes_jobs_of_queues_that_are_not_paused(
    sessions: db.Sessions,
) -> None:
    job_id = published_job(sessions, kind="import")
    pause(sessions, DEFAULT_QUEUE)

    lease = complete_claim(sessions, job_id, IMPORTS_QUEUE)

    assert lease is not None
    assert row(sessions, job_id).status == "running"
