"""The HTTP contract (v1), end to end through the real app: lifespan, PostgreSQL and Redis."""

from __future__ import annotations

import uuid

import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from core import db
from core.models import Job
from core.settings import Settings
from tests.integration.api_support import (
    JOB_FIELDS,
    SLEEP,
    Keys,
    assert_problem,
    bearer,
    job_row,
    submit,
    wait_dispatched,
)

# --- authentication and roles ---------------------------------------------------------------


def test_missing_key_is_401_problem(client: TestClient) -> None:
    response = client.get("/v1/jobs")
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization", ["Bearer cvk_not-a-real-key", "Basic dXNlcjpwYXNz", "Bearer", "cvk_x"]
)
def test_bad_key_is_401(client: TestClient, keys: Keys, authorization: str) -> None:
    response = client.get("/v1/jobs", headers={"Authorization": authorization})
    assert_problem(response, 401, "unauthenticated")


def test_submitter_cannot_manage_keys(client: TestClient, keys: Keys) -> None:
    response = client.post("/v1/api-keys", json={"name": "x", "role": "admin"}, headers=keys.alice)
    assert_problem(response, 403, "forbidden")
    assert_problem(client.get("/v1/api-keys", headers=keys.operator), 403, "forbidden")


def test_admin_creates_lists_and_revokes_keys(client: TestClient, keys: Keys) -> None:
    created = client.post(
        "/v1/api-keys", json={"name": "ci", "role": "submitter"}, headers=keys.admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"id", "name", "role", "scopes", "key"}
    assert body["role"] == "submitter"
    new_key = bearer(body["key"])
    assert client.get("/v1/jobs", headers=new_key).status_code == 200

    listed = client.get("/v1/api-keys", headers=keys.admin)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert {item["name"] for item in items} == {"admin", "ops", "alice", "bob", "ci"}
    assert all(
        set(item) == {"id", "name", "role", "scopes", "created_at", "revoked_at"} for item in items
    )

    assert client.delete(f"/v1/api-keys/{body['id']}", headers=keys.admin).status_code == 204
    assert_problem(client.get("/v1/jobs", headers=new_key), 401, "unauthenticated")
    revoked = client.get("/v1/api-keys", headers=keys.admin).json()["items"]
    assert next(i for i in revoked if i["id"] == body["id"])["revoked_at"] is not None

    assert_problem(
        client.delete(f"/v1/api-keys/{uuid.uuid4()}", headers=keys.admin), 404, "not_found"
    )
    assert_problem(client.delete("/v1/api-keys/nope", headers=keys.admin), 404, "not_found")


def test_invalid_key_role_is_422(client: TestClient, keys: Keys) -> None:
    response = client.post("/v1/api-keys", json={"name": "x", "role": "root"}, headers=keys.admin)
    body = assert_problem(response, 422, "invalid_request")
    assert body["where"] == {"field": "body.role"}


def test_submitters_see_only_their_own_jobs(client: TestClient, keys: Keys) -> None:
    alice_job = submit(client, keys.alice)
    bob_job = submit(client, keys.bob)

    for method, path in [
        ("GET", f"/v1/jobs/{alice_job}"),
        ("GET", f"/v1/jobs/{alice_job}/events"),
        ("POST", f"/v1/jobs/{alice_job}/cancel"),
        ("POST", f"/v1/jobs/{alice_job}/retry"),
    ]:
        assert_problem(client.request(method, path, headers=keys.bob), 404, "not_found")
    assert job_row_status(client, keys.alice, alice_job) == "queued"  # bob's cancel did nothing

    bob_list = client.get("/v1/jobs", headers=keys.bob).json()["items"]
    assert [job["id"] for job in bob_list] == [bob_job]
    ops_list = client.get("/v1/jobs", headers=keys.operator).json()["items"]
    assert {job["id"] for job in ops_list} == {alice_job, bob_job}
    assert client.get(f"/v1/jobs/{alice_job}", headers=keys.operator).status_code == 200
    assert client.get(f"/v1/jobs/{bob_job}", headers=keys.admin).status_code == 200


def job_row_status(client: TestClient, headers: dict[str, str], job_id: str) -> str:
    response = client.get(f"/v1/jobs/{job_id}", headers=headers)
    assert response.status_code == 200
    return str(response.json()["status"])


# --- submit -----------------------------------------------------------------------------------


def test_submit_returns_202_location_and_job(
    client: TestClient, keys: Keys, sessions: db.Sessions, settings: Settings
) -> None:
    response = client.post("/v1/jobs", json=SLEEP, headers=keys.alice)
    assert response.status_code == 202, response.text
    job = response.json()
    assert set(job) == JOB_FIELDS
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["kind"] == "sleep"
    assert job["status"] == "queued"
    assert job["params"] == {
        "seconds": 1.0,
        "steps": 2,
        "fail_attempts": 0,
        "timeout_seconds": None,
        "uninterruptible": False,
    }
    assert job["time_limit_seconds"] == settings.time_limit_for("sleep")
    assert job["waiting_reason"] is None
    assert job["progress"] == {"total": None, "done": 0, "failed": 0, "percent": 0.0}
    assert job["attempt"] == 0
    assert job["cancel_requested"] is False
    assert job["error"] is None
    assert job["result"] is None
    assert job["started_at"] is None

    fetched = client.get(response.headers["Location"], headers=keys.alice)
    assert fetched.status_code == 200
    assert fetched.json() == job

    # Committed, then published at once (by the dispatcher, just after the answer):
    # the row gets marked and the message is on the queue.
    wait_dispatched(sessions, job["id"])
    row = job_row(sessions, job["id"])
    assert row.principal_id is not None
    broker = redis.Redis.from_url(settings.redis_url)
    try:
        assert broker.llen("default") > 0
    finally:
        broker.close()


def test_noop_params_default(client: TestClient, keys: Keys) -> None:
    response = client.post("/v1/jobs", json={"kind": "noop"}, headers=keys.alice)
    assert response.status_code == 202, response.text
    assert response.json()["params"] == {"fail_attempts": 0}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "import", "params": {}}, "body.kind"),
        ({"params": {}}, "body.kind"),
        ({"kind": "sleep", "params": {}}, "body.params.seconds"),
        ({"kind": "sleep", "params": {"seconds": 0}}, "body.params.seconds"),
        ({"kind": "sleep", "params": {"seconds": 3601}}, "body.params.seconds"),
        ({"kind": "sleep", "params": {"seconds": "soon"}}, "body.params.seconds"),
        ({"kind": "sleep", "params": {"seconds": 1, "steps": 0}}, "body.params.steps"),
        ({"kind": "sleep", "params": {"seconds": 1, "steps": 10_001}}, "body.params.steps"),
        ({"kind": "noop", "params": {"fail_attempts": -1}}, "body.params.fail_attempts"),
        ({"kind": "noop", "params": {"typo": 1}}, "body.params.typo"),
        ({"kind": "noop", "params": [1]}, "body.params"),
        ({"kind": "noop", "priority": 9}, "body.priority"),
    ],
)
def test_submit_rejects_bad_kind_and_params(
    client: TestClient, keys: Keys, body: object, field: str
) -> None:
    problem = assert_problem(
        client.post("/v1/jobs", json=body, headers=keys.alice), 422, "invalid_request"
    )
    assert problem["where"] == {"field": field}
    errors = problem["errors"]
    assert isinstance(errors, list)
    assert errors[0]["field"] == field
    assert "input" not in errors[0]


def test_a_time_limit_past_the_operators_is_422(
    client: TestClient, keys: Keys, settings: Settings
) -> None:
    limit = settings.time_limit_for("sleep")
    body = {"kind": "sleep", "params": {"seconds": 1, "timeout_seconds": limit + 1}}
    problem = assert_problem(
        client.post("/v1/jobs", json=body, headers=keys.alice), 422, "invalid_request"
    )
    assert problem["where"] == {"field": "params.timeout_seconds"}
    assert f"{limit:g}" in problem["message"]
    shorter = {"kind": "sleep", "params": {"seconds": 1, "timeout_seconds": 5}}
    response = client.post("/v1/jobs", json=shorter, headers=keys.alice)
    assert response.status_code == 202, response.text
    assert response.json()["time_limit_seconds"] == 5


def test_submit_rejects_malformed_json(client: TestClient, keys: Keys) -> None:
    response = client.post(
        "/v1/jobs",
        content=b'{"kind": "noop",',
        headers={**keys.alice, "Content-Type": "application/json"},
    )
    assert_problem(response, 422, "invalid_request")


def test_idempotency_key_replays_and_conflicts(
    client: TestClient, keys: Keys, sessions: db.Sessions
) -> None:
    headers = {**keys.alice, "Idempotency-Key": "order-42"}
    first = client.post("/v1/jobs", json=SLEEP, headers=headers)
    assert first.status_code == 202
    job_id = first.json()["id"]

    # Same request, even spelled differently (defaults written out, other key order): replay.
    same = {"params": {"steps": 2, "fail_attempts": 0, "seconds": 1.0}, "kind": "sleep"}
    replay = client.post("/v1/jobs", json=same, headers=headers)
    assert replay.status_code == 200, replay.text
    assert replay.json()["id"] == job_id
    assert replay.headers["Location"] == f"/v1/jobs/{job_id}"

    different = {"kind": "sleep", "params": {"seconds": 2}}
    conflict = assert_problem(
        client.post("/v1/jobs", json=different, headers=headers), 409, "idempotency_key_reused"
    )
    assert conflict["where"] == {"header": "Idempotency-Key"}

    # Keys are per principal: bob's "order-42" is his own.
    other = client.post("/v1/jobs", json=SLEEP, headers={**keys.bob, "Idempotency-Key": "order-42"})
    assert other.status_code == 202
    assert other.json()["id"] != job_id

    with db.transaction(sessions) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Job)) == 2


def test_idempotency_key_too_long_is_422(client: TestClient, keys: Keys) -> None:
    headers = {**keys.alice, "Idempotency-Key": "k" * 256}
    problem = assert_problem(
        client.post("/v1/jobs", json=SLEEP, headers=headers), 422, "invalid_request"
    )
    assert problem["where"] == {"field": "header.Idempotency-Key"}


# --- list, cancel, retry, events ------------------------------------------------------------


def test_list_paginates_without_duplicates(client: TestClient, keys: Keys) -> None:
    submitted = [submit(client, keys.alice) for _ in range(5)]
    seen: list[str] = []
    pages = 0
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        response = client.get("/v1/jobs", params=params, headers=keys.alice)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"items", "next_cursor"}
        assert len(page["items"]) <= 2
        seen.extend(job["id"] for job in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(submitted))  # newest first, each exactly once


def test_list_filters_by_status_and_kind(client: TestClient, keys: Keys) -> None:
    cancelled = submit(client, keys.alice)
    queued = submit(client, keys.alice)
    noop = submit(client, keys.alice, {"kind": "noop"})
    assert client.post(f"/v1/jobs/{cancelled}/cancel", headers=keys.alice).status_code == 202

    def ids(**params: str) -> set[str]:
        response = client.get("/v1/jobs", params=params, headers=keys.alice)
        assert response.status_code == 200, response.text
        return {job["id"] for job in response.json()["items"]}

    assert ids(status="cancelled") == {cancelled}
    assert ids(status="queued") == {queued, noop}
    assert ids(status="queued", kind="noop") == {noop}
    assert ids(status="succeeded") == set()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=bogus", "query.status"),
        ("limit=0", "query.limit"),
        ("limit=501", "query.limit"),
        ("cursor=not-a-cursor", None),
    ],
)
def test_list_rejects_bad_query(
    client: TestClient, keys: Keys, query: str, field: str | None
) -> None:
    problem = assert_problem(
        client.get(f"/v1/jobs?{query}", headers=keys.alice), 422, "invalid_request"
    )
    if field is not None:
        assert problem["where"] == {"field": field}


def test_events_follow_the_job(client: TestClient, keys: Keys) -> None:
    job_id = submit(client, keys.alice)
    client.post(f"/v1/jobs/{job_id}/cancel", headers=keys.alice)
    response = client.get(f"/v1/jobs/{job_id}/events", headers=keys.alice)
    assert response.status_code == 200
    items = response.json()["items"]
    assert [(e["type"], e["data"]["status"]) for e in items] == [
        ("status", "queued"),
        ("status", "cancelled"),
    ]
    assert set(items[0]) == {"id", "at", "type", "attempt", "data"}
    after = client.get(f"/v1/jobs/{job_id}/events?after={items[0]['id']}", headers=keys.alice)
    assert [e["id"] for e in after.json()["items"]] == [items[1]["id"]]


@pytest.mark.parametrize("path", ["/v1/jobs/not-a-uuid", "/v1/jobs/123/cancel"])
def test_invalid_uuid_is_404(client: TestClient, keys: Keys, path: str) -> None:
    method = "POST" if path.endswith("cancel") else "GET"
    assert_problem(client.request(method, path, headers=keys.operator), 404, "not_found")


def test_unknown_job_is_404(client: TestClient, keys: Keys) -> None:
    response = client.get(f"/v1/jobs/{uuid.uuid4()}", headers=keys.operator)
    assert_problem(response, 404, "not_found")


# --- cross-cutting ----------------------------------------------------------------------------


def test_request_id_is_echoed_or_generated(
    client: TestClient, keys: Keys, sessions: db.Sessions
) -> None:
    response = client.post(
        "/v1/jobs", json=SLEEP, headers={**keys.alice, "X-Request-ID": "req-1.A_b"}
    )
    assert response.headers["X-Request-ID"] == "req-1.A_b"
    assert job_row(sessions, response.json()["id"]).request_id == "req-1.A_b"

    generated = client.get("/health/live").headers["X-Request-ID"]
    assert len(generated) == 32
    int(generated, 16)

    for insane in ["has space", "x" * 129, "semi;colon"]:
        replaced = client.get("/health/live", headers={"X-Request-ID": insane})
        assert replaced.headers["X-Request-ID"] != insane
        assert len(replaced.headers["X-Request-ID"]) == 32

    problem = client.get("/v1/jobs", headers={"X-Request-ID": "trace-me"})
    assert problem.json()["request_id"] == "trace-me"


def test_unknown_route_and_method_are_problems(client: TestClient, keys: Keys) -> None:
    assert_problem(client.get("/nope"), 404, "not_found")
    response = client.delete("/v1/jobs", headers=keys.admin)
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["Allow"]


def test_unexpected_error_is_500_without_traceback(
    settings: Settings, sessions: db.Sessions
) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("internal detail that must not leak")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/boom", headers={"X-Request-ID": "boom-1"})
    body = assert_problem(response, 500, "internal_error")
    assert body["request_id"] == "boom-1"
    assert "must not leak" not in response.text
    assert "Traceback" not in response.text


def test_health(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}

    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["status"] == "up"
    assert body["checks"]["database"]["latency_ms"] >= 0
    assert body["checks"]["redis"]["status"] == "up"
    assert body["checks"]["redis"]["breaker"] == "closed"
    assert set(body["outbox"]) == {"undispatched", "oldest_age_seconds"}

    redis_health = client.get("/health/redis").json()
    assert redis_health["status"] == "up"
    assert redis_health["breaker"] == "closed"

    breaker = client.get("/health/circuit-breaker").json()
    assert breaker["state"] == "closed"
    assert breaker["successes"] >= 2  # the pings above went through the breaker


def test_openapi_docs(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/health/ready"} <= set(schema["paths"])


def test_keys_carry_scopes_that_grant_importers(client: TestClient, keys: Keys) -> None:
    created = client.post(
        "/v1/api-keys",
        json={"name": "scoped", "role": "submitter", "scopes": ["imports:products", "x:y"]},
        headers=keys.admin,
    )
    assert created.status_code == 201, created.text
    assert sorted(created.json()["scopes"]) == ["imports:products", "x:y"]
    listed = client.get("/v1/api-keys", headers=keys.admin).json()["items"]
    assert next(i for i in listed if i["name"] == "scoped")["scopes"] == ["imports:products", "x:y"]
    bad = client.post(
        "/v1/api-keys",
        json={"name": "x", "role": "submitter", "scopes": ["no spaces allowed"]},
        headers=keys.admin,
    )
    assert_problem(bad, 422, "invalid_request")
