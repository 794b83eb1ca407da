"""Dependency faults across real processes (uvicorn API, prefork Celery workers, no beat):
Redis stopped or frozen while clients submit, a worker SIGKILLed mid-job, PostgreSQL cut off
behind a TCP proxy. Redis is a private redis-server on a random port, really stopped."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from core import db
from core.api_keys import Role
from core.broker.celery_config import celery_config
from core.lifecycle import commands, leases
from core.lifecycle.states import JobStatus
from core.models import Job, JobEvent
from core.settings import Settings
from tests import services
from tests.e2e.conftest import poll_job, wait_for_job
from tests.submit_load import NOOP, Submitted, percentile, submit_steadily
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.slow(170)]

TERMINAL = {"succeeded", "failed", "cancelled"}
# What a submit may take while Redis is down: about what it takes with Redis up, measured in
# the same test (three times its p99: the machine may be busy, and 50 samples make a noisy
# p99), and in any case less than the 0.5 s socket timeout that a submit waiting on a dead
# or frozen Redis would pay.
SUBMIT_BOUND = (0.2, 0.45)


def submit_bound(client: httpx.Client) -> float:
    baseline = [r.seconds for r in submit_steadily(client, count=50, rate=50)]
    low, high = SUBMIT_BOUND
    return min(high, max(low, 3 * percentile(baseline, 0.99)))


def assert_accepted_within_bound(results: list[Submitted], bound: float) -> list[float]:
    latencies = [r.seconds for r in results]
    assert {r.status for r in results} == {202}
    p99 = percentile(latencies, 0.99)
    assert p99 < bound, f"p99 {p99:.3f}s (bound {bound:.3f}s), max {max(latencies):.3f}s"
    return latencies


class StatusPoller:
    """Reads job status over HTTP while something else is going on; records what it saw."""

    def __init__(self, client: httpx.Client, job_ids: list[str]) -> None:
        self.client = client
        self.job_ids = job_ids  # appended to by the test while polling
        self.seen: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> StatusPoller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            if not self.job_ids:
                continue
            response = self.client.get(f"/v1/jobs/{self.job_ids[-1]}")
            self.seen.append((response.status_code, response.json().get("status")))


def jobs_by_status(sessions: db.Sessions, job_ids: list[str]) -> dict[str, int]:
    with db.transaction(sessions) as session:
        rows = session.execute(
            sa.select(Job.status, sa.func.count()).where(Job.id.in_(job_ids)).group_by(Job.status)
        )
        return {status: int(count) for status, count in rows}


def assert_each_ran_once(sessions: db.Sessions, job_ids: list[str]) -> None:
    """One claim and one success per job: no job's effect ran twice."""
    with db.transaction(sessions) as session:
        attempts = {
            job_id: attempt
            for job_id, attempt in session.execute(
                sa.select(Job.id, Job.attempt).where(Job.id.in_(job_ids))
            )
        }
        events = session.execute(
            sa.select(JobEvent.job_id, JobEvent.data["status"].astext).where(
                JobEvent.job_id.in_(job_ids), JobEvent.type == "status"
            )
        ).all()
        twice = [job_id for job_id, attempt in attempts.items() if attempt != 1]
        history = [
            (str(e.job_id), e.at.isoformat(), e.attempt, e.type, e.data)
            for e in session.scalars(
                sa.select(JobEvent).where(JobEvent.job_id.in_(twice[:3])).order_by(JobEvent.id)
            )
        ]
    assert not twice, f"{len(twice)} jobs ran more than once, e.g. {history}"
    counts = Counter((str(job_id), status) for job_id, status in events)
    for job_id in job_ids:
        assert counts[(job_id, "running")] == 1, f"job {job_id} claimed more than once"
        assert counts[(job_id, "succeeded")] == 1, f"job {job_id} succeeded more than once"


def redis_env(server: services.RedisServer) -> dict[str, str]:
    return {"CONVEYOR_REDIS_URL": server.url}


def breaker(platform: services.Platform) -> dict[str, Any]:
    snapshot: dict[str, Any] = httpx.get(f"{platform.api_url}/health/circuit-breaker").json()
    return snapshot


def wait_all_succeeded(sessions: db.Sessions, job_ids: list[str], timeout: float) -> float:
    started = time.monotonic()
    try:
        services.wait_until(
            lambda: jobs_by_status(sessions, job_ids).get("succeeded") == len(job_ids),
            timeout=timeout,
            interval=0.1,
            message=f"{len(job_ids)} jobs to succeed",
        )
    except TimeoutError as error:
        raise TimeoutError(f"{error}; {dispatch_state(sessions, job_ids)}") from None
    return time.monotonic() - started


def dispatch_state(sessions: db.Sessions, job_ids: list[str]) -> dict[str, int]:
    """Where unfinished jobs are stuck: counts by (status, dispatched or not)."""
    with db.transaction(sessions) as session:
        rows = session.execute(
            sa.select(Job.status, Job.dispatched_at.is_not(None), sa.func.count())
            .where(Job.id.in_(job_ids))
            .group_by(Job.status, Job.dispatched_at.is_not(None))
        )
        return {
            f"{status}/{'dispatched' if dispatched else 'undispatched'}": int(count)
            for status, dispatched, count in rows
        }


# --- Redis stopped ----------------------------------------------------------------------------


def test_redis_stopped_while_clients_submit_then_restarted(
    platform: services.Platform,
    sessions: db.Sessions,
    settings: Settings,
    private_redis: services.RedisServer,
    api_client: Any,
) -> None:
    """200 submits at 50/s with Redis dead: all 202 within the bound, status readable, the
    breaker opens; Redis back on the same port: the breaker closes, the relay publishes the
    backlog, and the *same* worker (never restarted) runs every job exactly once."""
    env = redis_env(private_redis)
    platform.start_api(env)
    worker = platform.start_worker(concurrency=2, extra_env=env)
    client = api_client(Role.submitter)
    before = client.post("/v1/jobs", json=NOOP).json()["id"]
    assert wait_for_job(client, before, TERMINAL, timeout=30)["status"] == "succeeded"
    bound = submit_bound(client)
    services.wait_until(
        lambda: client.get("/health/ready").json()["outbox"]["undispatched"] == 0,
        timeout=30,
        message="the baseline's jobs published before Redis stops",
    )

    private_redis.stop()
    submitted: list[str] = []
    with StatusPoller(client, submitted) as poller:
        results = submit_steadily(client, count=200, rate=50)
        submitted.extend(r.job_id for r in results if r.job_id is not None)
        time.sleep(0.3)
    assert_accepted_within_bound(results, bound)
    assert poller.seen
    assert {code for code, _ in poller.seen} == {200}
    assert {status for _, status in poller.seen} == {"queued"}

    opened = breaker(platform)
    assert opened["state"] in ("open", "half-open")  # half-open: during a trial call
    assert opened["opened_at"] is not None
    assert opened["failures"] >= opened["fail_max"]
    assert opened["rejections"] > 0
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["outbox"]["undispatched"] == 200
    assert jobs_by_status(sessions, submitted) == {"queued": 200}

    private_redis.start()  # same port, empty: nothing it held before survived
    services.wait_until(
        lambda: breaker(platform)["state"] == "closed", timeout=10, message="breaker closed"
    )
    assert time.time() - opened["opened_at"] >= settings.breaker_reset_timeout
    wait_all_succeeded(sessions, submitted, timeout=60)
    assert_each_ran_once(sessions, submitted)
    assert worker.popen.poll() is None
    assert client.get("/health/ready").json()["outbox"]["undispatched"] == 0


# --- Redis frozen -----------------------------------------------------------------------------


def test_redis_paused_submits_time_out_instead_of_hanging(
    platform: services.Platform,
    sessions: db.Sessions,
    private_redis: services.RedisServer,
    api_client: Any,
) -> None:
    """SIGSTOP: connections are accepted by the kernel and never answered. Submits do not
    wait for Redis at all (the publish runs after the response); the publishes behind them
    each wait one socket timeout until the breaker opens, then none. Default timeouts."""
    env = redis_env(private_redis)
    platform.start_api(env)
    platform.start_worker(concurrency=2, extra_env=env)
    client = api_client(Role.submitter)
    bound = submit_bound(client)

    private_redis.pause()
    try:
        results = submit_steadily(client, count=200, rate=50)
        snapshot = breaker(platform)
    finally:
        private_redis.resume()
    assert_accepted_within_bound(results, bound)
    # Open, or half-open while the relay's trial call waits out its timeout.
    assert snapshot["state"] in ("open", "half-open")
    assert snapshot["state_changes"] >= 1
    assert snapshot["failures"] >= snapshot["fail_max"]
    assert "Timeout" in (snapshot["last_error"] or "")

    job_ids = [r.job_id for r in results if r.job_id is not None]
    assert len(job_ids) == len(results)
    wait_all_succeeded(sessions, job_ids, timeout=120)
    assert_each_ran_once(sessions, job_ids)


# --- worker killed ----------------------------------------------------------------------------


def _load(sessions: db.Sessions, job_id: str) -> Job:
    with db.transaction(sessions) as session:
        job = session.get(Job, uuid.UUID(job_id))
        assert job is not None
        return job


def _dead_workers_last_attempt(sessions: db.Sessions) -> str:
    """A job whose worker died on its last allowed attempt: running, lease expired."""
    with db.transaction(sessions) as session:
        job = commands.submit_job(
            session,
            kind="noop",
            params={},
            principal_id=None,
            max_attempts=2,
            time_limit_seconds=60,
        ).job
        session.execute(
            sa.update(Job)
            .where(Job.id == job.id)
            .values(
                status=JobStatus.running.value,
                attempt=2,
                lease_owner="gone@nowhere:1:x",
                lease_expires_at=sa.func.now(),
                dispatched_at=sa.func.now(),
            )
        )
        return str(job.id)


def test_killed_worker_job_is_reaped_within_the_bound(
    platform: services.Platform, sessions: db.Sessions, settings: Settings, api_client: Any
) -> None:
    """SIGKILL the worker running a job, with no beat running; Redis' visibility timeout is
    left at its 1 h default, so only the lease reaper (in the API and the surviving worker)
    can bring the job back: within lease + reaper interval."""
    assert "visibility_timeout" not in celery_config(settings)["broker_transport_options"]
    platform.start_api()
    workers = [platform.start_worker(concurrency=1) for _ in range(2)]
    client = api_client(Role.submitter)
    job_id = client.post("/v1/jobs", json={"kind": "sleep", "params": {"seconds": 6, "steps": 30}})
    job_id = job_id.json()["id"]
    poll_job(client, job_id, lambda j: j["progress"]["done"] >= 3, timeout=30)

    owner = _load(sessions, job_id).lease_owner or ""
    doomed = next(w for w in workers if w.holds(owner))
    exhausted = _dead_workers_last_attempt(sessions)
    doomed.kill_group()
    killed_at = time.monotonic()
    doomed.popen.wait(10)

    services.wait_until(
        lambda: _load(sessions, job_id).attempt == 2, timeout=30, message="second attempt"
    )
    recovered = time.monotonic() - killed_at
    bound = settings.lease_seconds + settings.reaper_interval
    assert recovered < bound + 1.5, f"reclaimed {recovered:.2f}s after the kill (bound {bound}s)"

    finished = wait_for_job(client, job_id, TERMINAL, timeout=30)
    assert finished["status"] == "succeeded", finished
    assert finished["result"]["resumed_at_step"] >= 3
    gave_up = _load(sessions, exhausted)
    assert gave_up.status == "failed"
    assert gave_up.error_code == leases.ATTEMPTS_EXHAUSTED


# --- PostgreSQL cut off -----------------------------------------------------------------------


@pytest.fixture
def db_proxy(settings: Settings) -> Iterator[tuple[TcpProxy, str]]:
    """A proxy in front of the test database, and the database URL through it."""
    url = sa.make_url(settings.sqlalchemy_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port)
        yield proxy, proxied.render_as_string(hide_password=False)


def assert_database_problem(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "database_unavailable"
    assert "Traceback" not in response.text
    assert "psycopg" not in response.text


def test_database_cut_off_answers_503_and_worker_resumes_its_unit(
    platform: services.Platform,
    sessions: db.Sessions,
    api_client: Any,
    db_proxy: tuple[TcpProxy, str],
) -> None:
    proxy, proxied_url = db_proxy
    through_proxy = {"CONVEYOR_DATABASE_URL": proxied_url}
    platform.start_api({**through_proxy, "CONVEYOR_DATABASE_CONNECT_TIMEOUT": "2"})
    worker = platform.start_worker(concurrency=1, extra_env=through_proxy)
    client = api_client(Role.submitter)
    job = client.post("/v1/jobs", json={"kind": "sleep", "params": {"seconds": 6, "steps": 30}})
    job_id = job.json()["id"]
    poll_job(client, job_id, lambda j: j["progress"]["done"] >= 3, timeout=30)

    proxy.cut()  # every connection reset, new ones refused
    started = time.perf_counter()
    assert_database_problem(client.get(f"/v1/jobs/{job_id}"))
    assert time.perf_counter() - started < 1
    assert_database_problem(client.post("/v1/jobs", json=NOOP))
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["code"] == "database_unavailable"
    stalled_at = _load(sessions, job_id).progress_done

    proxy.blackhole()  # a hung server: connections accepted, never answered
    started = time.perf_counter()
    assert_database_problem(client.get(f"/v1/jobs/{job_id}"))
    assert time.perf_counter() - started < 4  # the connect timeout (2 s), not a hang
    assert _load(sessions, job_id).progress_done == stalled_at

    proxy.restore()
    finished = wait_for_job(client, job_id, TERMINAL, timeout=30)
    assert finished["status"] == "succeeded", finished
    assert finished["attempt"] == 1  # the same attempt carried on: nothing redone, nothing lost
    assert finished["progress"]["done"] == 30
    assert finished["result"]["resumed_at_step"] == 0
    assert "worker.database_unavailable" in worker.output()
