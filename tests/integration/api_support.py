"""What the HTTP contract tests share: keys of each role, submitting, problem checks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi.testclient import TestClient

from core import db
from core.api_keys import Role
from core.models import Job
from core.settings import Settings
from tests import services

PROBLEM = "application/problem+json"
JOB_FIELDS = {
    "id",
    "kind",
    "status",
    "progress",
    "attempt",
    "cancel_requested",
    "waiting_reason",
    "time_limit_seconds",
    "trace_id",
    "created_at",
    "started_at",
    "finished_at",
    "error",
    "result",
    "params",
    "schedule_id",
    "fire_time",
}
SLEEP = {"kind": "sleep", "params": {"seconds": 1, "steps": 2}}


@dataclass(frozen=True)
class Keys:
    admin: dict[str, str]
    operator: dict[str, str]
    alice: dict[str, str]
    bob: dict[str, str]


def bearer(plain: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {plain}"}


def make_keys(sessions: db.Sessions, settings: Settings) -> Keys:
    return Keys(
        admin=bearer(services.new_api_key(sessions, settings, Role.admin, "admin")),
        operator=bearer(services.new_api_key(sessions, settings, Role.operator, "ops")),
        alice=bearer(services.new_api_key(sessions, settings, Role.submitter, "alice")),
        bob=bearer(services.new_api_key(sessions, settings, Role.submitter, "bob")),
    )


def job_row(sessions: db.Sessions, job_id: str) -> Job:
    with db.transaction(sessions) as session:
        job = session.get(Job, uuid.UUID(job_id))
        assert job is not None
        return job


def submit(client: TestClient, headers: dict[str, str], body: object = None) -> str:
    response = client.post("/v1/jobs", json=body or SLEEP, headers=headers)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["message"] == body["detail"]
    assert body["type"].endswith(code)
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert "where" in body
    return dict(body)


def wait_dispatched(sessions: db.Sessions, job_id: str) -> None:
    services.wait_until(
        lambda: job_row(sessions, job_id).dispatched_at is not None,
        timeout=5,
        message=f"job {job_id} dispatched",
    )


def api_key_id(client: TestClient, keys: Keys, name: str) -> str:
    listed = client.get("/v1/api-keys", headers=keys.admin).json()["items"]
    return str(next(item["id"] for item in listed if item["name"] == name))
