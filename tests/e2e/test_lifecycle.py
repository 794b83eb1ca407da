"""The job lifecycle across real processes: HTTP API -> PostgreSQL -> Redis -> Celery worker."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from core import db
from core.api_keys import Role
from core.models import JobEvent
from tests.e2e.conftest import poll_job, wait_for_job

TERMINAL = {"succeeded", "failed", "cancelled"}


def _submit(client: Any, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"kind": kind, "params": params})
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/jobs/{response.json()['id']}"
    body: dict[str, Any] = response.json()
    return body


def _status_events(sessions: db.Sessions, job_id: str, status: str) -> int:
    with db.transaction(sessions) as session:
        return int(
            session.scalar(
                sa.select(sa.func.count()).where(
                    JobEvent.job_id == job_id,
                    JobEvent.type == "status",
                    JobEvent.data["status"].astext == status,
                )
            )
            or 0
        )


def test_noop_and_sleep_succeed_with_visible_progress(platform, api_client, sessions):
    platform.start_api()
    platform.start_worker(concurrency=2)
    client = api_client(Role.submitter)

    noop = _submit(client, "noop", {})
    assert noop["status"] == "queued"
    sleep = _submit(client, "sleep", {"seconds": 2.0, "steps": 8})

    seen_partial: list[tuple[int, int]] = []

    def record(job: dict[str, Any]) -> None:
        progress = job["progress"]
        if job["status"] == "running" and 0 < progress["done"] < (progress["total"] or 0):
            seen_partial.append((progress["done"], progress["total"]))

    done_noop = wait_for_job(client, noop["id"], TERMINAL, timeout=30)
    done_sleep = wait_for_job(client, sleep["id"], TERMINAL, timeout=30, on_poll=record)

    assert done_noop["status"] == "succeeded"
    assert done_noop["attempt"] == 1
    assert done_noop["error"] is None
    assert done_sleep["status"] == "succeeded", done_sleep
    assert done_sleep["progress"]["done"] == done_sleep["progress"]["total"] == 8
    assert done_sleep["progress"]["percent"] == 100.0
    assert done_sleep["result"]["steps"] == 8
    assert done_sleep["started_at"]
    assert done_sleep["finished_at"]
    assert seen_partial, "progress was never visible while the job ran"
    assert _status_events(sessions, sleep["id"], "succeeded") == 1


def test_cancel_running_sleep(platform, api_client):
    platform.start_api()
    platform.start_worker()
    client = api_client(Role.submitter)
    job = _submit(client, "sleep", {"seconds": 30, "steps": 300})
    # Mid-way: a cancel that lands before the first step (0.1 s) would rightly leave 0 done.
    poll_job(client, job["id"], lambda j: j["progress"]["done"] >= 1, timeout=30)

    response = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["cancel_requested"] is True

    cancelled = wait_for_job(client, job["id"], TERMINAL, timeout=15)
    assert cancelled["status"] == "cancelled"
    assert 0 < cancelled["progress"]["done"] < 300
    again = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")


def test_retry_failed_job_succeeds(platform, api_client):
    platform.start_api()
    platform.start_worker()
    client = api_client(Role.submitter)
    job = _submit(client, "noop", {"fail_attempts": 1})

    failed = wait_for_job(client, job["id"], TERMINAL, timeout=30)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "induced_failure"
    assert "attempt 1" in failed["error"]["message"]

    response = client.post(f"/v1/jobs/{job['id']}/retry")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"

    succeeded = wait_for_job(client, job["id"], TERMINAL, timeout=30)
    assert succeeded["status"] == "succeeded"
    assert succeeded["attempt"] == 2
    assert succeeded["error"] is None


def test_killed_worker_job_finishes_once_on_new_worker(platform, api_client, sessions):
    """SIGKILL the whole worker (main process and pool children) mid-job, no beat running;
    Redis' visibility timeout stays at its 1 h default, so only the lease reaper (in the API
    process here) can bring the job back."""
    platform.start_api()
    doomed = platform.start_worker(concurrency=1)
    client = api_client(Role.submitter)
    job = _submit(client, "sleep", {"seconds": 4, "steps": 20})

    # Let it commit a few steps so the new attempt has a checkpoint to resume from.
    running = poll_job(client, job["id"], lambda j: j["progress"]["done"] >= 3, timeout=30)
    assert running["status"] == "running"
    doomed.kill_group()
    doomed.popen.wait(10)

    platform.start_worker(concurrency=1)
    finished = wait_for_job(client, job["id"], TERMINAL, timeout=60)

    assert finished["status"] == "succeeded", finished
    assert finished["attempt"] == 2
    assert finished["result"]["resumed_at_step"] >= 3
    assert _status_events(sessions, job["id"], "succeeded") == 1
