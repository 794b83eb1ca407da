"""Deployment limits on real PostgreSQL: the global cap and the per-target lock decided in
the claim's transaction, jobs held back with their reason, woken when a deployment
finishes, rechecked by the safety net, and concurrent claims that never exceed the cap."""

from __future__ import annotations

import threading
import uuid

import sqlalchemy as sa

from core import db
from core.broker.task_names import DEPLOYMENTS_QUEUE
from core.deployments import limits
from core.deployments.limits import DeploymentAdmission
from core.lifecycle import admission, commands, leases
from core.lifecycle.states import JobStatus
from core.models import Job, JobEvent
from core.queues import control as queue_control


def deployment(sessions: db.Sessions, *targets: str) -> uuid.UUID:
    with db.transaction(sessions) as session:
        job = commands.submit_job(
            session,
            kind="deployment",
            params={},
            principal_id=None,
            max_attempts=3,
            time_limit_seconds=60,
        ).job
        limits.record_targets(session, job_id=job.id, lock_keys=list(targets))
        return job.id


def claim(sessions: db.Sessions, job_id: uuid.UUID, cap: int) -> leases.Lease | None:
    with db.transaction(sessions) as session:
        return leases.claim_job(
            session,
            job_id=job_id,
            queue=DEPLOYMENTS_QUEUE,
            owner=f"w-{uuid.uuid4().hex[:6]}",
            lease_seconds=30,
            grace=5,
            admission=DeploymentAdmission(max_running=cap),
        )


def row(sessions: db.Sessions, job_id: uuid.UUID) -> Job:
    with db.transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def waiting_events(sessions: db.Sessions, job_id: uuid.UUID) -> list[dict[str, object]]:
    with db.transaction(sessions) as session:
        return list(
            session.scalars(
                sa.select(JobEvent.data)
                .where(JobEvent.job_id == job_id, JobEvent.type == "waiting")
                .order_by(JobEvent.id)
            )
        )


def test_cap_holds_the_next_job_and_finishing_wakes_it(sessions):
    first, second, third = (deployment(sessions, f"h{n}:22") for n in range(3))
    lease = claim(sessions, first, cap=2)
    assert lease is not None
    assert claim(sessions, second, cap=2) is not None
    assert claim(sessions, third, cap=2) is None

    held = row(sessions, third)
    assert (held.status, held.waiting_reason, held.dispatched_at) == (
        "queued",
        "concurrency_limit",
        None,
    )
    assert waiting_events(sessions, third) == [
        {"reason": "concurrency_limit", "max_running": 2, "blocking_job_id": str(first)}
    ]
    assert claim(sessions, third, cap=2) is None
    assert len(waiting_events(sessions, third)) == 1, "the same refusal is recorded once"

    with db.transaction(sessions) as session:
        leases.finish_job(session, lease=lease, status=JobStatus.succeeded)
        DeploymentAdmission(max_running=2).released(session, first)
    woken = row(sessions, third)
    assert (woken.waiting_reason, woken.dispatched_at) == (None, None)
    assert claim(sessions, third, cap=2) is not None


def test_target_lock_names_the_blocking_job(sessions):
    holder = deployment(sessions, "db:22", "web:22")
    other = deployment(sessions, "web:22")
    elsewhere = deployment(sessions, "cache:22")
    assert claim(sessions, holder, cap=5) is not None
    assert claim(sessions, other, cap=5) is None
    assert claim(sessions, elsewhere, cap=5) is not None
    assert row(sessions, other).waiting_reason == "target_busy"
    assert waiting_events(sessions, other) == [
        {"reason": "target_busy", "target": "web:22", "blocking_job_id": str(holder)}
    ]


def test_an_expired_lease_releases_the_target(sessions):
    holder = deployment(sessions, "web:22")
    waiter = deployment(sessions, "web:22")
    assert claim(sessions, holder, cap=5) is not None
    assert claim(sessions, waiter, cap=5) is None
    with db.transaction(sessions) as session:  # its worker died: the lease ran out
        session.execute(
            sa.update(Job).where(Job.id == holder).values(lease_expires_at=sa.func.now())
        )
        # The safety net offers the waiter again (nothing finished to wake it).
        session.execute(
            sa.update(Job)
            .where(Job.id == waiter)
            .values(updated_at=sa.func.now() - sa.text("interval '1 minute'"))
        )
        assert admission.recheck_waiting(session, older_than=10) == 1
    assert claim(sessions, waiter, cap=5) is not None


def test_concurrent_claims_never_exceed_the_cap(sessions):
    jobs = [deployment(sessions, f"h{n}:22") for n in range(6)]
    barrier = threading.Barrier(len(jobs))
    won: list[uuid.UUID] = []

    def race(job_id: uuid.UUID) -> None:
        barrier.wait()
        if claim(sessions, job_id, cap=2) is not None:
            won.append(job_id)

    threads = [threading.Thread(target=race, args=(job_id,)) for job_id in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 2
    held = [row(sessions, job_id).waiting_reason for job_id in jobs if job_id not in won]
    assert held == ["concurrency_limit"] * 4


def test_a_release_and_a_resume_each_wake_only_their_own_waiters(sessions):
    """A paused queue's jobs stay held when a deployment finishes (the limits' wake), and
    the resume leaves jobs held by a limit alone."""
    limited, paused = deployment(sessions, "a:22"), deployment(sessions, "b:22")
    with db.transaction(sessions) as session:
        admission.hold(session, job_id=limited, refusal=admission.Refusal("concurrency_limit"))
        queue_control.pause(session, name=DEPLOYMENTS_QUEUE, principal_id=None)
        admission.hold(session, job_id=paused, refusal=admission.Refusal("queue_paused"))

    with db.transaction(sessions) as session:
        DeploymentAdmission(max_running=1).released(session, uuid.uuid4())
    assert (row(sessions, limited).waiting_reason, row(sessions, paused).waiting_reason) == (
        None,
        "queue_paused",
    )

    with db.transaction(sessions) as session:
        admission.hold(session, job_id=limited, refusal=admission.Refusal("concurrency_limit"))
        assert queue_control.resume(session, name=DEPLOYMENTS_QUEUE) == 1
    assert (row(sessions, limited).waiting_reason, row(sessions, paused).waiting_reason) == (
        "concurrency_limit",
        None,
    )
