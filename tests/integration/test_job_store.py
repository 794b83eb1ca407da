"""The lifecycle against real PostgreSQL: idempotent submit, exclusive claims, lease fencing
(leases, unit fence, renewal), cancel, retry, the reaper, and the outbox's SKIP LOCKED."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from core import api_keys, db
from core.api_keys import Role
from core.broker.task_names import DEFAULT_QUEUE
from core.errors import IdempotencyConflict, LeaseLost
from core.lifecycle import commands, leases, outbox, reaper
from core.lifecycle.states import JobStatus
from core.models import Job

T = TypeVar("T")

TINY_LEASE = 0.5  # long enough to outlast the next statement on a loaded machine


@pytest.fixture
def principal_id(sessions: db.Sessions) -> uuid.UUID:
    with db.transaction(sessions) as session:
        row, _ = api_keys.create_key(session, name="alice", role=Role.submitter, pepper="p")
    return row.id


def new_job(
    sessions: db.Sessions,
    *,
    principal_id: uuid.UUID | None = None,
    max_attempts: int = 5,
    params: dict[str, object] | None = None,
    time_limit: float = 3600,
) -> uuid.UUID:
    with db.transaction(sessions) as session:
        submitted = commands.submit_job(
            session,
            kind="sleep",
            params=dict(params or {"seconds": 1}),
            principal_id=principal_id,
            max_attempts=max_attempts,
            time_limit_seconds=time_limit,
        )
    return submitted.job.id


def load(sessions: db.Sessions, job_id: uuid.UUID) -> Job:
    with db.transaction(sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def claim(
    sessions: db.Sessions,
    job_id: uuid.UUID,
    owner: str,
    lease_seconds: float = 30,
    grace: float = 30,
) -> leases.Lease | None:
    with db.transaction(sessions) as session:
        return leases.claim_job(
            session,
            job_id=job_id,
            queue=DEFAULT_QUEUE,  # new_job's jobs are sleeps
            owner=owner,
            lease_seconds=lease_seconds,
            grace=grace,
        )


def progress(
    sessions: db.Sessions, lease: leases.Lease, unit_seq: int, done: int, **extra: Any
) -> bool:
    with db.transaction(sessions) as session:
        return leases.save_progress(
            session, lease=lease, lease_seconds=30, unit_seq=unit_seq, done=done, **extra
        )


def race(count: int, action: Callable[[int], T]) -> list[T]:
    """Run ``action(i)`` in ``count`` threads released together by a barrier."""
    barrier = threading.Barrier(count)
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = action(index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert len(results) == count, "a racer did not finish"
    return [results[index] for index in range(count)]


# --- submit -----------------------------------------------------------------------------------


def test_idempotent_submit(sessions: db.Sessions, principal_id: uuid.UUID) -> None:
    def submit(params: dict[str, object]) -> commands.Submitted:
        with db.transaction(sessions) as session:
            return commands.submit_job(
                session,
                kind="sleep",
                params=params,
                principal_id=principal_id,
                max_attempts=5,
                time_limit_seconds=60,
                idempotency_key="key-1",
            )

    first = submit({"seconds": 1, "steps": 2})
    again = submit({"steps": 2, "seconds": 1})
    assert first.created is True
    assert again.created is False
    assert again.job.id == first.job.id

    with pytest.raises(IdempotencyConflict) as raised:
        submit({"seconds": 2, "steps": 2})
    assert str(first.job.id) in raised.value.message


def test_concurrent_idempotent_submits_make_one_job(
    sessions: db.Sessions, principal_id: uuid.UUID
) -> None:
    def submit(_: int) -> tuple[uuid.UUID, bool]:
        with db.transaction(sessions) as session:
            submitted = commands.submit_job(
                session,
                kind="noop",
                params={},
                principal_id=principal_id,
                max_attempts=5,
                time_limit_seconds=60,
                idempotency_key="same",
            )
            return submitted.job.id, submitted.created

    outcomes = race(4, submit)
    assert len({job_id for job_id, _ in outcomes}) == 1
    assert sorted(created for _, created in outcomes) == [False, False, False, True]


# --- claim and lease fencing -----------------------------------------------------------------


def test_two_concurrent_claims_one_wins(sessions: db.Sessions) -> None:
    job_id = new_job(sessions)
    claims = race(2, lambda i: claim(sessions, job_id, owner=f"worker-{i}"))
    won = [lease for lease in claims if lease is not None]
    assert len(won) == 1
    assert won[0].attempt == 1
    job = load(sessions, job_id)
    assert job.status == JobStatus.running
    assert job.lease_owner == won[0].owner
    assert job.attempt == 1


def test_stale_lease_is_taken_over_and_old_owner_is_fenced(sessions: db.Sessions) -> None:
    job_id = new_job(sessions)
    old = claim(sessions, job_id, owner="zombie", lease_seconds=TINY_LEASE)
    assert old is not None
    assert claim(sessions, job_id, owner="eager") is None  # lease still valid
    time.sleep(TINY_LEASE * 2)

    new = claim(sessions, job_id, owner="rescuer")
    assert new is not None
    assert new.attempt == 2

    with pytest.raises(LeaseLost):
        progress(sessions, old, 0, done=1, total=2)
    with pytest.raises(LeaseLost), db.transaction(sessions) as session:
        leases.renew_lease(session, lease=old, lease_seconds=30)
    with pytest.raises(LeaseLost), db.transaction(sessions) as session:
        leases.finish_job(session, lease=old, status=JobStatus.succeeded, result={"x": 1})

    assert progress(sessions, new, 0, done=1) is False
    with db.transaction(sessions) as session:
        leases.finish_job(session, lease=new, status=JobStatus.succeeded, result={"ok": True})
    job = load(sessions, job_id)
    assert job.status == JobStatus.succeeded
    assert job.result == {"ok": True}
    assert job.progress_done == 1
    assert job.lease_owner is None


def test_save_progress_reports_cancel_request(sessions: db.Sessions) -> None:
    job_id = new_job(sessions)
    lease = claim(sessions, job_id, owner="w")
    assert lease is not None
    assert progress(sessions, lease, 0, done=1) is False
    with db.transaction(sessions) as session:
        job = commands.request_cancel(session, job_id=job_id, principal=None)
        assert job.status == JobStatus.running  # running jobs stop between units
        assert job.cancel_requested is True
    with db.transaction(sessions) as session:  # the heartbeat sees it too
        assert leases.renew_lease(session, lease=lease, lease_seconds=30) is True
    assert progress(sessions, lease, 1, done=2, checkpoint={"step": 2}) is True
    assert load(sessions, job_id).checkpoint == {"step": 2}


def test_retry_resets_a_failed_job(sessions: db.Sessions) -> None:
    job_id = new_job(sessions, max_attempts=1)
    lease = claim(sessions, job_id, owner="w")
    assert lease is not None
    progress(sessions, lease, 0, done=3, total=10, checkpoint={"at": 3})
    with db.transaction(sessions) as session:
        leases.finish_job(
            session,
            lease=lease,
            status=JobStatus.failed,
            error_code="boom",
            error_message="it broke",
        )
    with db.transaction(sessions) as session:
        job = commands.retry_job(session, job_id=job_id, principal=None, attempts_budget=3)
    assert job.status == JobStatus.queued
    assert job.error_code is None
    assert job.error_message is None
    assert job.checkpoint is None
    assert job.finished_at is None
    assert job.dispatched_at is None
    assert (job.progress_done, job.progress_total) == (0, None)
    assert job.max_attempts == 1 + 3  # a fresh budget on top of the attempts used

    again = claim(sessions, job_id, owner="w2")
    assert again is not None
    assert again.attempt == 2


def test_a_unit_is_recorded_once_whatever_retries_it(sessions: db.Sessions) -> None:
    """The unit fence: a unit retried after an uncertain COMMIT finds it was recorded."""
    job_id = new_job(sessions)
    lease = claim(sessions, job_id, owner="w")
    assert lease is not None
    progress(sessions, lease, 0, done=10, checkpoint={"offset": 10})
    with pytest.raises(LeaseLost):  # the same unit again: the count has moved on
        progress(sessions, lease, 0, done=10, checkpoint={"offset": 10})
    with db.transaction(sessions) as session:
        state = leases.unit_state(session, lease=lease)
    assert (state.unit_seq, state.checkpoint, state.cancel_requested) == (1, {"offset": 10}, False)
    progress(sessions, lease, 1, done=20, checkpoint={"offset": 20})
    assert load(sessions, job_id).unit_seq == 2


def test_a_claim_retried_by_its_owner_gets_its_lease_back(sessions: db.Sessions) -> None:
    """A claim whose COMMIT failed but happened: the same delivery retrying it must not be
    locked out by its own lease, nor use up another attempt."""
    job_id = new_job(sessions)
    first = claim(sessions, job_id, owner="host:1:task")
    again = claim(sessions, job_id, owner="host:1:task")
    assert first is not None
    assert again == first
    assert claim(sessions, job_id, owner="host:2:other") is None
    assert load(sessions, job_id).attempt == 1


def test_the_lease_never_reaches_past_the_hard_deadline(sessions: db.Sessions) -> None:
    job_id = new_job(sessions, time_limit=1)
    lease = claim(sessions, job_id, owner="w", lease_seconds=30, grace=1)
    assert lease is not None
    job = load(sessions, job_id)
    assert job.run_deadline_at is not None
    assert job.lease_expires_at == job.run_deadline_at  # 2 s away, not 30
    with db.transaction(sessions) as session:
        leases.renew_lease(session, lease=lease, lease_seconds=30)
    assert load(sessions, job_id).lease_expires_at == job.run_deadline_at


# --- reaper -------------------------------------------------------------------------------------


def test_a_job_past_its_hard_deadline_fails_for_time_not_for_a_crash(
    sessions: db.Sessions,
) -> None:
    job_id = new_job(sessions, time_limit=0.05)
    assert claim(sessions, job_id, owner="killed", lease_seconds=30, grace=0.05) is not None
    time.sleep(0.3)
    with db.transaction(sessions) as session:
        reaped = reaper.requeue_expired(session, limit=100)
    assert reaped.timed_out == [str(job_id)]
    job = load(sessions, job_id)
    assert (job.status, job.error_code) == (JobStatus.failed, "time_limit_exceeded")
    assert job.lease_owner is None


def test_requeue_expired_requeues_and_fails_exhausted(sessions: db.Sessions) -> None:
    retryable = new_job(sessions, max_attempts=5)
    exhausted = new_job(sessions, max_attempts=1)
    healthy = new_job(sessions, max_attempts=5)
    for job_id in (retryable, exhausted):
        assert claim(sessions, job_id, owner="dead", lease_seconds=TINY_LEASE) is not None
    assert claim(sessions, healthy, owner="alive", lease_seconds=30) is not None
    with db.transaction(sessions) as session:  # as if published before the worker died
        outbox.mark_dispatched(session, job_ids=[retryable, exhausted, healthy])
    time.sleep(TINY_LEASE * 2)

    with db.transaction(sessions) as session:
        reaped = reaper.requeue_expired(session, limit=100)
    assert reaped.requeued == [str(retryable)]
    assert reaped.exhausted == [str(exhausted)]
    assert reaped.timed_out == []

    job = load(sessions, retryable)
    assert job.status == JobStatus.queued
    assert job.dispatched_at is None  # back in the outbox for the relay
    assert job.lease_owner is None
    dead = load(sessions, exhausted)
    assert dead.status == JobStatus.failed
    assert dead.error_code == leases.ATTEMPTS_EXHAUSTED
    assert dead.finished_at is not None
    assert load(sessions, healthy).status == JobStatus.running

    with db.transaction(sessions) as session:
        assert reaper.requeue_expired(session, limit=100) == reaper.Reaped()


# --- outbox -------------------------------------------------------------------------------------


def test_lock_undispatched_skips_rows_locked_by_another_relay(sessions: db.Sessions) -> None:
    job_ids = {new_job(sessions) for _ in range(5)}
    with db.transaction(sessions) as first, db.transaction(sessions) as second:
        batch_one = {job.id for job in outbox.lock_undispatched(first, limit=3)}
        batch_two = {job.id for job in outbox.lock_undispatched(second, limit=10)}
        assert len(batch_one) == 3
        assert len(batch_two) == 2
        assert batch_one.isdisjoint(batch_two)
        assert batch_one | batch_two == job_ids
        outbox.mark_dispatched(first, job_ids=list(batch_one))
    with db.transaction(sessions) as session:
        left = {job.id for job in outbox.lock_undispatched(session, limit=10)}
    assert left == batch_two  # the second relay committed without publishing


def test_concurrent_relays_never_share_a_row(sessions: db.Sessions) -> None:
    for _ in range(20):
        new_job(sessions)

    def relay(_: int) -> list[uuid.UUID]:
        with db.transaction(sessions) as session:
            jobs = outbox.lock_undispatched(session, limit=8)
            time.sleep(0.1)  # hold the locks while the other relays look
            outbox.mark_dispatched(session, job_ids=[job.id for job in jobs])
            return [job.id for job in jobs]

    batches = race(3, relay)
    seen = [job_id for batch in batches for job_id in batch]
    assert len(seen) == len(set(seen))
    assert len(seen) == 20
