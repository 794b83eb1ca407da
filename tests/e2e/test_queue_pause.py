"""Pausing a queue with real processes: jobs are accepted and wait (queue_paused), the
running worker stops taking them without a restart, the running job finishes; resume runs
them. GET /v1/queues shows depth, running, oldest age, paused and the consuming worker."""

from __future__ import annotations

import time
from typing import Any

import httpx

from core import db
from core.api_keys import Role
from core.models import Job
from tests import services
from tests.e2e.conftest import wait_for_job


def _submit(client: httpx.Client, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"kind": kind, "params": params})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def _dispatched(sessions: db.Sessions, job_id: str) -> bool:
    with db.transaction(sessions) as session:
        job = session.get(Job, job_id)
        return job is not None and job.dispatched_at is not None


def _queue(client: httpx.Client, name: str) -> dict[str, Any]:
    response = client.get("/v1/queues")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = next(q for q in response.json()["items"] if q["name"] == name)
    return found


def test_paused_queue_holds_jobs_until_resumed(platform, api_client, sessions: db.Sessions):
    platform.start_api()
    worker = platform.start_worker(queues="default", concurrency=1)
    operator = api_client(Role.operator)
    submitter = api_client(Role.submitter)

    running = _submit(submitter, "sleep", {"seconds": 3, "steps": 3})
    wait_for_job(submitter, running["id"], {"running"}, timeout=30)
    # Published before the pause: its message waits for the worker's only slot, and the
    # worker's claim must refuse it once the slot is free.
    early = _submit(submitter, "noop", {})
    services.wait_until(
        lambda: _dispatched(sessions, early["id"]), timeout=10, message="the early job published"
    )

    paused = operator.post("/v1/queues/default/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["queue"]["paused"] is True
    late = [_submit(submitter, "noop", {}) for _ in range(2)]
    assert {job["waiting_reason"] for job in late} == {"queue_paused"}  # never published
    held = [early, *late]

    # The running job finishes; the held ones are never started: the early one's message
    # reached the same worker, which refused it and put it back with the reason.
    done = wait_for_job(submitter, running["id"], {"succeeded", "failed"}, timeout=30)
    assert done["status"] == "succeeded"
    time.sleep(3)
    with db.transaction(sessions) as session:
        rows = [session.get(Job, job["id"]) for job in held]
        assert all(row is not None and row.started_at is None for row in rows)
        assert {row.status for row in rows if row} == {"queued"}
        assert {row.waiting_reason for row in rows if row} == {"queue_paused"}
        assert {row.dispatched_at for row in rows if row} == {None}

    queue = _queue(operator, "default")
    assert queue["paused"] is True
    assert queue["depth"] == 3
    assert queue["running"] == 0
    assert queue["oldest_waiting_seconds"] >= 3
    argv = [str(arg) for arg in worker.popen.args]
    node = argv[argv.index("--hostname") + 1].split("@")[0]
    assert [name.split("@")[0] for name in queue["workers"]] == [node]
    assert _queue(operator, "imports")["paused"] is False
    assert operator.post("/v1/queues/nope/pause").status_code == 404
    assert submitter.post("/v1/queues/default/resume").status_code == 403

    resumed = operator.post("/v1/queues/default/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["jobs_affected"] == 3
    for job in held:
        finished = wait_for_job(submitter, job["id"], {"succeeded", "failed"}, timeout=30)
        assert finished["status"] == "succeeded"
        assert finished["waiting_reason"] is None
    assert worker.popen.poll() is None  # the same worker process, never restarted
    assert _queue(operator, "default")["paused"] is False
