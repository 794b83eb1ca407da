"""Cancelling through the HTTP API: a queued job at once, a running one flagged (also when
the cancel races a worker's claim), then retried; unknown jobs and revoked keys refused."""

from __future__ import annotations

import threading
import uuid

import httpx
from fastapi.testclient import TestClient

from core import db
from core.models import Job
from core.settings import Settings
from tests.integration.api_support import (
    Keys,
    api_key_id,
    assert_problem,
    job_row,
    submit,
    wait_dispatched,
)


def test_cancel_then_retry(client: TestClient, keys: Keys, sessions: db.Sessions) -> None:
    job_id = submit(client, keys.alice)
    cancelled = client.post(f"/v1/jobs/{job_id}/cancel", headers=keys.alice)
    assert cancelled.status_code == 202
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None

    again = client.post(f"/v1/jobs/{job_id}/cancel", headers=keys.alice)
    assert_problem(again, 409, "invalid_transition")

    retried = client.post(f"/v1/jobs/{job_id}/retry", headers=keys.alice)
    assert retried.status_code == 202, retried.text
    body = retried.json()
    assert body["status"] == "queued"
    assert body["cancel_requested"] is False
    assert body["finished_at"] is None
    wait_dispatched(sessions, job_id)  # published again

    assert_problem(
        client.post(f"/v1/jobs/{job_id}/retry", headers=keys.alice), 409, "invalid_transition"
    )


def test_cancel_flags_a_running_job(client: TestClient, keys: Keys, sessions: db.Sessions) -> None:
    job_id = submit(client, keys.alice)
    with db.transaction(sessions) as session:  # as if a worker had claimed it
        job = session.get(Job, uuid.UUID(job_id))
        assert job is not None
        job.status = "running"

    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=keys.alice)

    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["status"], body["cancel_requested"], body["finished_at"]) == (
        "running",
        True,
        None,
    )
    events = client.get(f"/v1/jobs/{job_id}/events", headers=keys.alice).json()["items"]
    assert [(e["type"], e["data"]) for e in events] == [
        ("status", {"status": "queued"}),
        ("cancel_requested", {}),
    ]


def test_cancel_racing_a_claim_flags_the_job(
    client: TestClient, keys: Keys, sessions: db.Sessions
) -> None:
    """The cancel's UPDATE waits for the claim's row lock, then re-reads the row: the job
    that started meanwhile is flagged, not cancelled under its worker."""
    job_id = submit(client, keys.alice)
    answers: list[httpx.Response] = []
    with db.transaction(sessions) as session:  # a worker's claim, not committed yet
        job = session.get(Job, uuid.UUID(job_id))
        assert job is not None
        job.status = "running"
        session.flush()
        cancel = threading.Thread(
            target=lambda: answers.append(
                client.post(f"/v1/jobs/{job_id}/cancel", headers=keys.alice)
            )
        )
        cancel.start()
        cancel.join(timeout=1)
        assert cancel.is_alive()  # blocked on the claim's row lock
    cancel.join(timeout=10)

    assert answers[0].status_code == 202, answers[0].text
    assert (answers[0].json()["status"], answers[0].json()["cancel_requested"]) == (
        "running",
        True,
    )
    assert job_row(sessions, job_id).status == "running"


def test_cancel_refuses_unknown_jobs_and_revoked_keys(
    client: TestClient, keys: Keys, sessions: db.Sessions, settings: Settings
) -> None:
    assert_problem(
        client.post(f"/v1/jobs/{uuid.uuid4()}/cancel", headers=keys.operator), 404, "not_found"
    )
    job_id = submit(client, keys.alice)
    revoke = f"/v1/api-keys/{api_key_id(client, keys, 'alice')}?cancel_jobs=false"
    assert client.delete(revoke, headers=keys.admin).status_code == 204

    response = client.post(f"/v1/jobs/{job_id}/cancel", headers=keys.alice)

    assert_problem(response, 401, "unauthenticated")
    assert job_row(sessions, job_id).status == "queued"
