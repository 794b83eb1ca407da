"""The job runtime across real processes, with no beat anywhere: the heartbeat keeps a unit of
any length alive, recovery runs in every worker's main process even when every job slot is
busy, time limits end jobs (soft: the body stops; hard: the pool process is killed), a lost
message is published again, and a unit whose COMMIT answer was lost is not applied twice."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from core import db
from core.api_keys import Role
from core.broker.breaker import RedisBreaker
from core.broker.publisher import JobMessage, JobPublisher
from core.lifecycle import commands
from core.models import Job, JobEvent
from core.settings import Settings
from tests import services
from tests.e2e.conftest import wait_for_job
from tests.product_csv import products_csv
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e

TERMINAL = {"succeeded", "failed", "cancelled"}


def _submit(client: Any, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"kind": kind, "params": params})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def _events(sessions: db.Sessions, job_id: str) -> list[dict[str, Any]]:
    with db.transaction(sessions) as session:
        rows = session.scalars(
            sa.select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        )
        return [{"type": e.type, "attempt": e.attempt, **e.data} for e in rows]


def _job(sessions: db.Sessions, job_id: str) -> Job:
    with db.transaction(sessions) as session:
        job = session.get(Job, uuid.UUID(job_id))
        assert job is not None
        return job


def test_a_unit_twice_as_long_as_the_lease_succeeds_at_the_first_attempt(
    platform: services.Platform, settings: Settings, api_client: Any, sessions: db.Sessions
) -> None:
    platform.start_api()
    platform.start_worker(concurrency=1)
    client = api_client(Role.submitter)
    seconds = settings.lease_seconds * 2
    job = _submit(client, "sleep", {"seconds": seconds, "steps": 1})
    running = wait_for_job(client, job["id"], {"running"}, timeout=30)
    first_expiry = _job(sessions, job["id"]).lease_expires_at
    assert first_expiry is not None

    done = wait_for_job(client, job["id"], TERMINAL, timeout=seconds + 30)
    assert done["status"] == "succeeded", done
    assert done["attempt"] == running["attempt"] == 1
    statuses = [e["status"] for e in _events(sessions, job["id"]) if e["type"] == "status"]
    assert statuses == ["queued", "running", "succeeded"]  # never reaped, never re-run


def test_cancel_reaches_a_long_unit_within_a_heartbeat(
    platform: services.Platform, settings: Settings, api_client: Any
) -> None:
    platform.start_api()
    platform.start_worker(concurrency=1)
    client = api_client(Role.submitter)
    job = _submit(client, "sleep", {"seconds": 120, "steps": 1})
    wait_for_job(client, job["id"], {"running"}, timeout=30)
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
    asked = time.monotonic()
    done = wait_for_job(client, job["id"], TERMINAL, timeout=30)
    assert done["status"] == "cancelled", done
    assert time.monotonic() - asked < settings.lease_seconds / 3 + 2


def _publish(settings: Settings, sessions: db.Sessions, params: dict[str, Any]) -> str:
    """Submit a sleep job straight through core (no API process: recovery must come from
    the workers alone)."""
    with db.transaction(sessions) as session:
        job = commands.submit_job(
            session,
            kind="sleep",
            params={"steps": 1, **params},
            principal_id=None,
            max_attempts=5,
            time_limit_seconds=settings.time_limit_for("sleep"),
        ).job
        message = JobMessage.of(job)
    publisher = JobPublisher.from_settings(settings, RedisBreaker.from_settings(settings))
    try:
        assert publisher.publish(message)
    finally:
        publisher.close()
    return str(message.job_id)


def _wait_status(sessions: db.Sessions, job_id: str, status: str, timeout: float) -> float:
    started = time.monotonic()
    services.wait_until(
        lambda: _job(sessions, job_id).status == status,
        timeout=timeout,
        interval=0.1,
        message=f"job {job_id} {status}",
    )
    return time.monotonic() - started


def test_recovery_runs_beside_full_slots_with_no_api_and_no_beat(
    platform: services.Platform, settings: Settings, sessions: db.Sessions
) -> None:
    """Two long jobs fill both slots of the only surviving worker; the worker running a third
    job is SIGKILLed. The survivor's main process still reaps the third job within the bound
    (its slots are busy, its recovery loop is not), and runs it once a slot frees."""
    busy = platform.start_worker(concurrency=2)
    long_jobs = [_publish(settings, sessions, {"seconds": 25}) for _ in range(2)]
    for job_id in long_jobs:
        _wait_status(sessions, job_id, "running", timeout=30)
    doomed = platform.start_worker(concurrency=1)
    victim = _publish(settings, sessions, {"seconds": 4, "steps": 4})
    _wait_status(sessions, victim, "running", timeout=30)
    assert doomed.holds(_job(sessions, victim).lease_owner)

    doomed.kill_group()
    killed = time.monotonic()
    doomed.popen.wait(10)
    services.wait_until(
        lambda: any(e.get("reason") == "lease_expired" for e in _events(sessions, victim)),
        timeout=settings.reaper_bound_seconds,
        interval=0.1,
        message="the victim reaped",
    )
    assert time.monotonic() - killed < settings.lease_seconds + settings.reaper_interval + 1.5
    # Reaped while both slots of the survivor were still taken by the long jobs.
    assert all(_job(sessions, job_id).status == "running" for job_id in long_jobs)

    _wait_status(sessions, victim, "succeeded", timeout=60)
    assert _job(sessions, victim).attempt == 2
    assert all(_job(sessions, job_id).status == "succeeded" for job_id in long_jobs)
    assert busy.popen.poll() is None


def test_soft_time_limit_stops_the_body_and_frees_the_slot(
    platform: services.Platform, api_client: Any, sessions: db.Sessions
) -> None:
    platform.start_api()
    platform.start_worker(concurrency=1)
    client = api_client(Role.submitter)
    job = _submit(client, "sleep", {"seconds": 60, "steps": 1, "timeout_seconds": 2})
    assert job["time_limit_seconds"] == 2
    started = wait_for_job(client, job["id"], {"running"}, timeout=30)
    done = wait_for_job(client, job["id"], TERMINAL, timeout=30)
    assert started["attempt"] == done["attempt"] == 1
    assert done["status"] == "failed"
    assert done["error"]["code"] == "time_limit_exceeded"
    after = _submit(client, "noop", {})  # the only slot is free again
    assert wait_for_job(client, after["id"], TERMINAL, timeout=30)["status"] == "succeeded"


@pytest.mark.parametrize("settings_overrides", [{"time_limit_grace_seconds": 2}])
def test_hard_time_limit_kills_the_pool_process_and_fails_the_job_once(
    platform: services.Platform, settings: Settings, api_client: Any, sessions: db.Sessions
) -> None:
    """A body that ignores the soft limit is killed at limit + grace; the job fails with
    time_limit_exceeded (not retried as a crash) and the worker runs the next job."""
    platform.start_api()
    worker = platform.start_worker(concurrency=1)
    client = api_client(Role.submitter)
    job = _submit(
        client, "sleep", {"seconds": 60, "steps": 1, "timeout_seconds": 2, "uninterruptible": True}
    )
    wait_for_job(client, job["id"], {"running"}, timeout=30)
    done = wait_for_job(client, job["id"], TERMINAL, timeout=30)
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "time_limit_exceeded"
    assert done["attempt"] == 1
    assert "Hard time limit" in worker.output()
    after = _submit(client, "noop", {})
    assert wait_for_job(client, after["id"], TERMINAL, timeout=30)["status"] == "succeeded"
    assert _job(sessions, job["id"]).attempt == 1


@pytest.mark.parametrize("settings_overrides", [{"republish_after_seconds": 2}])
def test_a_lost_message_is_published_again(
    platform: services.Platform, settings: Settings, api_client: Any, sessions: db.Sessions
) -> None:
    platform.start_api()
    client = api_client(Role.submitter)
    job = _submit(client, "noop", {})
    services.wait_until(
        lambda: _job(sessions, job["id"]).dispatched_at is not None,
        timeout=10,
        message="dispatched",
    )
    broker = redis.Redis.from_url(settings.redis_url)
    try:
        assert broker.delete("default") == 1  # the message vanishes (eviction, failover...)
    finally:
        broker.close()
    platform.start_worker(concurrency=1)
    done = wait_for_job(client, job["id"], TERMINAL, timeout=30)
    assert done["status"] == "succeeded"
    assert done["attempt"] == 1
    # The API's or the worker's recovery loop, whichever looked first, published it again.
    assert any("relay.republished_lost" in process.output() for process in platform.processes)


def _second_batch_commit() -> Callable[[dict[str, object], bytes], bool]:
    """A tripwire firing on the COMMIT of the second transaction that loaded rows (COPY),
    whichever pooled connection it ran on: its rows and checkpoint are committed, but the
    worker never hears so."""
    loaded_commits = 0

    def tripwire(connection: dict[str, object], data: bytes) -> bool:
        nonlocal loaded_commits
        if b"COPY " in data:
            connection["copy"] = True
        if b"Q\x00\x00\x00\x0bCOMMIT\x00" in data and connection.pop("copy", False):
            loaded_commits += 1
            return loaded_commits == 2
        return False

    return tripwire


@pytest.mark.parametrize("settings_overrides", [{"import_batch_rows": 1000}])
def test_a_unit_whose_commit_answer_was_lost_is_not_applied_twice(
    platform: services.Platform, settings: Settings, api_client: Any, sessions: db.Sessions
) -> None:
    """Insert mode, 3 batches; the second batch's COMMIT reaches PostgreSQL but its answer
    never reaches the worker. The retried unit must find itself recorded: no duplicate_key
    rows, counts exact, first attempt."""
    url = sa.make_url(settings.sqlalchemy_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        platform.start_api()
        platform.start_worker(concurrency=1, extra_env={"CONVEYOR_DATABASE_URL": proxied})
        client = api_client(Role.submitter)
        proxy.trip_on(_second_batch_commit())
        response = client.post(
            "/v1/imports",
            data={"importer": "products", "mode": "insert"},
            files={"file": ("p.csv", products_csv(3000), "text/csv")},
        )
        assert response.status_code == 202, response.text
        job = wait_for_job(client, response.json()["id"], TERMINAL, timeout=60)
    assert job["status"] == "succeeded", job
    assert job["attempt"] == 1
    result = job["result"]
    assert (result["rows_total"], result["inserted"], result["rejected"]) == (3000, 3000, 0)
    assert client.get(f"/v1/jobs/{job['id']}/errors").json()["items"] == []
    worker_log = platform.processes[1].output()
    assert "job.unit_already_committed" in worker_log  # the cut really happened
    with db.transaction(sessions) as session:
        assert session.scalar(sa.text("SELECT count(*) FROM products")) == 3000
