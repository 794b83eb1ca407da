"""The trigger-maintained job counters equal a full count after every kind of change:
submit, publish, claim, finish, cancel, retry, lease expiry, broker reset, delete, bulk
insert, truncate; and folding them is safe while other transactions write."""

from __future__ import annotations

import threading
import uuid

import sqlalchemy as sa

from core import db
from core.lifecycle import commands, counters, leases, outbox, reaper
from core.lifecycle.states import JobStatus
from core.models import Job
from tests.integration.test_job_store import claim, new_job

UNDISPATCHED = sa.and_(Job.status == JobStatus.queued.value, Job.dispatched_at.is_(None))


def counted(sessions: db.Sessions) -> tuple[dict[str, int], int]:
    """The truth, the slow way."""
    with db.transaction(sessions) as session:
        rows = session.execute(sa.select(Job.status, sa.func.count()).group_by(Job.status))
        counts = dict.fromkeys((status.value for status in JobStatus), 0)
        counts.update({status: int(count) for status, count in rows})
        waiting = session.scalar(sa.select(sa.func.count()).where(UNDISPATCHED)) or 0
    return counts, waiting


def maintained(sessions: db.Sessions, *, fold: bool) -> tuple[dict[str, int], int]:
    with db.transaction(sessions) as session:
        if fold:
            assert counters.fold(session)
        return counters.read(session)


def assert_counts_exact(sessions: db.Sessions) -> None:
    truth = counted(sessions)
    assert maintained(sessions, fold=False) == truth  # deltas pending
    assert maintained(sessions, fold=True) == truth  # folded
    with db.transaction(sessions) as session:
        assert session.scalar(sa.text("SELECT count(*) FROM job_counter_deltas")) == 0


def test_counters_follow_every_transition(sessions: db.Sessions) -> None:
    jobs = [new_job(sessions) for _ in range(6)]
    assert_counts_exact(sessions)

    with db.transaction(sessions) as session:
        outbox.mark_dispatched(session, job_ids=jobs[:5])
    assert_counts_exact(sessions)

    done = claim(sessions, jobs[0], "w1")
    failed = claim(sessions, jobs[1], "w1")
    expiring = claim(sessions, jobs[2], "w1", lease_seconds=0.01)
    assert done
    assert failed
    assert expiring
    with db.transaction(sessions) as session:
        leases.finish_job(session, lease=done, status=JobStatus.succeeded)
        leases.finish_job(session, lease=failed, status=JobStatus.failed, error_code="x")
        commands.request_cancel(session, job_id=jobs[3], principal=None)
    assert_counts_exact(sessions)

    with db.transaction(sessions) as session:
        commands.retry_job(session, job_id=jobs[1], principal=None, attempts_budget=3)
        reaper.requeue_expired(session, limit=10)
        outbox.undispatch_queued(session)
    assert_counts_exact(sessions)

    with db.transaction(sessions) as session:
        session.execute(sa.delete(Job).where(Job.id.in_(jobs[:2])))
    assert_counts_exact(sessions)


def test_bulk_insert_and_truncate(sessions: db.Sessions) -> None:
    new_job(sessions)
    with db.transaction(sessions) as session:
        session.execute(
            sa.text(
                "INSERT INTO jobs (id, kind, status, params, request_fingerprint) "
                "SELECT gen_random_uuid(), 'noop', "
                "(ARRAY['queued', 'succeeded', 'failed'])[1 + i % 3], '{}', 'f' "
                "FROM generate_series(1, 3000) AS i"
            )
        )
    assert_counts_exact(sessions)
    assert counted(sessions)[0]["succeeded"] == 1000

    with db.transaction(sessions) as session:
        session.execute(sa.text("TRUNCATE jobs CASCADE"))
    assert_counts_exact(sessions)
    assert maintained(sessions, fold=False) == (dict.fromkeys((s.value for s in JobStatus), 0), 0)


def test_folds_race_with_writers_without_losing_a_change(sessions: db.Sessions) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_folding() -> None:
        try:
            while not stop.is_set():
                with db.transaction(sessions) as session:
                    counters.fold(session)
        except BaseException as error:  # reported below
            errors.append(error)

    folders = [threading.Thread(target=keep_folding) for _ in range(2)]
    for folder in folders:
        folder.start()
    try:
        for index in range(60):
            job_id = new_job(sessions)
            lease = claim(sessions, job_id, f"w{index}")
            assert lease is not None
            with db.transaction(sessions) as session:
                leases.finish_job(session, lease=lease, status=JobStatus.succeeded)
    finally:
        stop.set()
        for folder in folders:
            folder.join(10)
    assert not errors
    assert_counts_exact(sessions)
    assert counted(sessions)[0]["succeeded"] == 60


def test_unknown_job_ids_change_nothing(sessions: db.Sessions) -> None:
    new_job(sessions)
    with db.transaction(sessions) as session:
        session.execute(sa.update(Job).where(Job.id == uuid.uuid4()).values(status="failed"))
    assert_counts_exact(sessions)
