"""POST /v1/jobs/batch through the real app: per-entry problems, idempotency keys inside and
across batches, Redis down during a batch, the size cap."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from core import db
from core.models import Job, JobEvent
from core.queues import control as queue_control
from core.settings import Settings
from tests import services

NOOP = {"kind": "noop", "params": {}}
PROBLEM = "application/problem+json"


@pytest.fixture
def headers(sessions: db.Sessions, settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {services.new_api_key(sessions, settings)}"}


def jobs_in_db(sessions: db.Sessions) -> list[Job]:
    with db.transaction(sessions) as session:
        return list(session.scalars(sa.select(Job).order_by(Job.created_at, Job.id)))


def batch(client: TestClient, headers: dict[str, str], jobs: list[Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs/batch", json={"jobs": jobs}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert len(body["items"]) == len(jobs)
    return body


def queued_job_ids(redis_client: redis.Redis, queue: str = "default") -> list[str]:
    """The job id of every message waiting on a Celery queue (protocol 2 body: args first)."""
    ids = []
    for raw in redis_client.lrange(queue, 0, -1):
        message = json.loads(raw)
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        ids.append(args[0])
    return ids


def test_mixed_entries_answer_in_order_and_create_the_valid_ones(
    client: TestClient, headers: dict[str, str], sessions: db.Sessions, settings: Settings
) -> None:
    entries: list[Any] = [
        NOOP,
        {"kind": "teleport"},  # unknown kind
        {"kind": "sleep", "params": {"seconds": 1, "steps": 2}},
        {"kind": "sleep", "params": {"seconds": -1}},  # bad params
        "not an object",
        {"kind": "noop", "params": {}, "surprise": 1},  # unknown field
        {"kind": "sleep", "params": {"seconds": 1, "timeout_seconds": 10**9}},  # over the limit
        {"kind": "noop", "params": {"fail_attempts": 1}},
    ]
    body = batch(client, headers, entries)
    statuses = [item["status"] for item in body["items"]]
    assert statuses == [202, 422, 202, 422, 422, 422, 422, 202]
    assert (body["created"], body["replayed"], body["failed"]) == (3, 0, 5)

    problems = {i: item["problem"] for i, item in enumerate(body["items"]) if item["problem"]}
    assert problems[1]["where"] == {"field": "jobs.1.kind"}
    assert problems[3]["where"] == {"field": "jobs.3.params.seconds"}
    assert problems[3]["code"] == "invalid_request"
    assert problems[3]["errors"][0]["field"] == "jobs.3.params.seconds"
    assert problems[6]["where"] == {"field": "jobs.6.params.timeout_seconds"}
    assert all(body["items"][i]["job"] is None for i in problems)

    created = [item["job"] for item in body["items"] if item["job"]]
    assert [job["kind"] for job in created] == ["noop", "sleep", "noop"]
    assert all(job["status"] == "queued" for job in created)
    rows = jobs_in_db(sessions)
    assert sorted(str(row.id) for row in rows) == sorted(job["id"] for job in created)
    with db.transaction(sessions) as session:
        events = session.scalar(sa.select(sa.func.count()).select_from(JobEvent))
    assert events == 3  # each created job has its `queued` event
    # Each created job is readable on its own, and was published (one pipelined batch).
    for job in created:
        got = client.get(f"/v1/jobs/{job['id']}", headers=headers)
        assert got.status_code == 200
        assert got.json()["id"] == job["id"]
    redis_client = redis.Redis.from_url(settings.redis_url)
    services.wait_until(
        lambda: all(row.dispatched_at is not None for row in jobs_in_db(sessions)),
        timeout=5,
        message="batch dispatched",
    )
    assert sorted(queued_job_ids(redis_client)) == sorted(job["id"] for job in created)


def test_idempotency_keys_inside_and_across_batches(
    client: TestClient, headers: dict[str, str], sessions: db.Sessions, settings: Settings
) -> None:
    first = batch(
        client,
        headers,
        [
            {**NOOP, "idempotency_key": "a"},
            {**NOOP, "idempotency_key": "a"},  # same key, same request, same batch: replay
            {"kind": "sleep", "params": {"seconds": 1}, "idempotency_key": "a"},  # different
            {**NOOP, "idempotency_key": "b"},
            NOOP,
            NOOP,  # no key: two jobs
        ],
    )
    items = first["items"]
    assert [item["status"] for item in items] == [202, 200, 409, 202, 202, 202]
    assert items[1]["job"]["id"] == items[0]["job"]["id"]
    assert items[2]["problem"]["code"] == "idempotency_key_reused"
    assert items[2]["problem"]["where"] == {"header": "Idempotency-Key"}
    assert items[4]["job"]["id"] != items[5]["job"]["id"]
    assert len(jobs_in_db(sessions)) == 4

    second = batch(
        client,
        headers,
        [
            {**NOOP, "idempotency_key": "b"},  # replay across batches
            {"kind": "sleep", "params": {"seconds": 1}, "idempotency_key": "b"},
            {**NOOP, "idempotency_key": "c"},
        ],
    )
    items2 = second["items"]
    assert [item["status"] for item in items2] == [200, 409, 202]
    assert items2[0]["job"]["id"] == items[3]["job"]["id"]
    assert len(jobs_in_db(sessions)) == 5
    # The single-submit header and a batch's key are one namespace per principal.
    single = client.post("/v1/jobs", json=NOOP, headers={**headers, "Idempotency-Key": "c"})
    assert single.status_code == 200
    assert single.json()["id"] == items2[2]["job"]["id"]
    # Another principal's keys are its own.
    other = {"Authorization": f"Bearer {services.new_api_key(sessions, settings, name='bob')}"}
    theirs = batch(client, other, [{**NOOP, "idempotency_key": "c"}])["items"][0]
    assert theirs["status"] == 202
    assert theirs["job"]["id"] != items2[2]["job"]["id"]


def test_redis_down_during_a_batch_accepts_all_and_publishes_each_once_later(
    settings: Settings,
    sessions: db.Sessions,
    headers: dict[str, str],
    private_redis: services.RedisServer,
) -> None:
    down_settings = settings.model_copy(update={"redis_url": private_redis.url})
    private_redis.stop()
    with TestClient(create_app(down_settings)) as client:
        body = batch(client, headers, [NOOP] * 300)
        assert body["created"] == 300
        ids = sorted(item["job"]["id"] for item in body["items"])
        # Accepted, committed, waiting in the outbox while Redis is down.
        rows = jobs_in_db(sessions)
        assert len(rows) == 300
        assert all(row.dispatched_at is None for row in rows)
        private_redis.start()
        services.wait_until(
            lambda: all(row.dispatched_at is not None for row in jobs_in_db(sessions)),
            timeout=30,
            message="relay published the batch",
        )
    # Every job's message is on its queue exactly once.
    assert sorted(queued_job_ids(private_redis.client())) == ids


def test_more_than_1000_entries_is_a_clear_422(
    client: TestClient, headers: dict[str, str], sessions: db.Sessions
) -> None:
    response = client.post("/v1/jobs/batch", json={"jobs": [NOOP] * 1001}, headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["code"] == "invalid_request"
    assert "at most 1000" in problem["message"]
    assert problem["where"] == {"field": "jobs"}
    assert jobs_in_db(sessions) == []
    # Exactly 1000 is fine.
    assert batch(client, headers, [NOOP] * 1000)["created"] == 1000


def test_batch_needs_a_valid_key(client: TestClient, sessions: db.Sessions) -> None:
    response = client.post(
        "/v1/jobs/batch", json={"jobs": [NOOP]}, headers={"Authorization": "Bearer cvk_nope"}
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert jobs_in_db(sessions) == []
    missing = client.post("/v1/jobs/batch", json={"jobs": [NOOP]})
    assert missing.status_code == 401


def test_batch_body_must_be_a_list_of_jobs(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/v1/jobs/batch", json={"jobs": {"kind": "noop"}}, headers=headers)
    assert response.status_code == 422
    assert response.json()["where"] == {"field": "body.jobs"}


def test_a_batch_into_a_paused_queue_is_created_and_held(
    client: TestClient,
    headers: dict[str, str],
    sessions: db.Sessions,
    settings: Settings,
) -> None:
    """Held jobs count as created, wait with queue_paused and are not published; a NUL in an
    entry's idempotency key is that entry's 422, located."""
    with db.transaction(sessions) as session:
        queue_control.pause(session, name="default", principal_id=None)
    try:
        body = batch(client, headers, [NOOP, NOOP, {**NOOP, "idempotency_key": "a\x00b"}])
        time.sleep(0.5)  # the dispatcher publishes within milliseconds of the answer
        rows = jobs_in_db(sessions)
        in_redis = queued_job_ids(redis.Redis.from_url(settings.redis_url))
    finally:  # later tests on this process's database (e2e modules) must find it running
        with db.transaction(sessions) as session:
            queue_control.resume(session, name="default")
    assert [item["status"] for item in body["items"]] == [202, 202, 422]
    assert (body["created"], body["replayed"], body["failed"]) == (2, 0, 1)
    assert {item["job"]["waiting_reason"] for item in body["items"][:2]} == {"queue_paused"}
    assert body["items"][2]["problem"]["where"] == {"field": "jobs.2.idempotency_key"}
    assert len(rows) == 2
    assert {(row.waiting_reason, row.dispatched_at) for row in rows} == {("queue_paused", None)}
    assert in_redis == []
