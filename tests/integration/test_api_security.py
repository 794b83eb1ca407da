"""The API's guards through the real app (lifespan, PostgreSQL, Redis): headers, Host and
CORS checks, body caps, throttled authentication, bounded integers, metrics access, key
revocation. Every refusal is problem+json."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core import db, page_cursor
from core.api_keys import Role
from core.lifecycle.states import JobStatus
from core.models import ApiKey, Job
from core.settings import Settings
from tests import services
from tests.integration.api_support import SLEEP, assert_problem, bearer, job_row, submit


@pytest.fixture
def admin(sessions: db.Sessions, settings: Settings) -> dict[str, str]:
    return bearer(services.new_api_key(sessions, settings, Role.admin, "admin"))


def make_client(settings: Settings, **changes: object) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=changes)))


@pytest.fixture
def client(settings: Settings, sessions: db.Sessions) -> Iterator[TestClient]:
    with make_client(settings) as test_client:
        yield test_client


# --- headers, Host, CORS, compression --------------------------------------------------------


def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    for response in (client.get("/health/live"), client.get("/v1/jobs"), client.get("/nope")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_docs_run_only_nonced_scripts(client: TestClient) -> None:
    first, second = client.get("/docs"), client.get("/docs")

    assert first.status_code == 200
    policy = first.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce is not None
    assert "'unsafe-inline'" not in policy
    assert "'unsafe-eval'" not in policy
    scripts = re.findall(r"<script[^>]*>", first.text)
    assert scripts
    assert all(f'nonce="{nonce.group(1)}"' in tag for tag in scripts)
    assert nonce.group(1) not in second.headers["Content-Security-Policy"]  # fresh each time
    assert client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").status_code == 200


def test_unknown_host_is_refused_before_the_app(client: TestClient) -> None:
    response = client.get("/health/live", headers={"Host": "evil.example.com"})

    body = assert_problem(response, 400, "bad_request")
    assert body["where"] == {"header": "Host"}


def test_cross_origin_access_only_for_listed_origins(
    settings: Settings, sessions: db.Sessions
) -> None:
    preflight = {"Access-Control-Request-Method": "POST"}
    with make_client(settings) as default:
        refused = default.options("/v1/jobs", headers={"Origin": "https://a.example", **preflight})
        plain = default.get("/health/live", headers={"Origin": "https://a.example"})
    assert refused.status_code == 400
    assert refused.headers["content-type"] == "application/problem+json"
    assert "access-control-allow-origin" not in plain.headers

    with make_client(settings, cors_origins=["https://a.example"]) as listed:
        allowed = listed.options("/v1/jobs", headers={"Origin": "https://a.example", **preflight})
        other = listed.options("/v1/jobs", headers={"Origin": "https://b.example", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://a.example"
    assert other.status_code == 400


def test_large_json_responses_are_compressed(client: TestClient, admin: dict[str, str]) -> None:
    for _ in range(20):
        submit(client, admin)

    response = client.get("/v1/jobs?limit=20", headers={**admin, "Accept-Encoding": "gzip"})

    assert response.headers["content-encoding"] == "gzip"
    assert len(response.json()["items"]) == 20  # httpx decoded it
    assert int(response.headers["content-length"]) < len(response.content)


# --- request bodies --------------------------------------------------------------------------


def test_json_body_over_the_cap_is_413_before_authentication(
    settings: Settings, sessions: db.Sessions
) -> None:
    with make_client(settings, max_json_body_bytes=1000) as small:
        declared = small.post("/v1/jobs", content=b"{" + b" " * 2000 + b"}")

        def chunks() -> Iterator[bytes]:
            yield b'{"kind": "sleep", "params": {"pad": "'
            for _ in range(10):
                yield b"x" * 500
            yield b'"}}'

        streamed = small.post(
            "/v1/api-keys", content=chunks(), headers={"Content-Type": "application/json"}
        )
        fits = small.post("/v1/jobs", json=SLEEP)

    assert_problem(declared, 413, "payload_too_large")
    assert_problem(streamed, 413, "payload_too_large")
    assert_problem(fits, 401, "unauthenticated")  # under the cap: on to authentication


# --- throttled authentication ----------------------------------------------------------------


def test_failed_authentications_are_throttled_per_address(
    settings: Settings, sessions: db.Sessions, admin: dict[str, str]
) -> None:
    with make_client(settings, auth_failure_limit=3) as limited:
        wrong = [limited.get("/v1/jobs", headers=bearer("cvk_wrong")) for _ in range(3)]
        throttled = limited.get("/v1/jobs", headers=bearer("cvk_wrong"))
        even_valid = limited.get("/v1/jobs", headers=admin)

    assert [response.status_code for response in wrong] == [401, 401, 401]
    assert_problem(throttled, 429, "rate_limited")
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert_problem(even_valid, 429, "rate_limited")  # a guess would not be checked either


def test_throttle_is_shared_through_redis_by_processes(
    settings: Settings, sessions: db.Sessions
) -> None:
    with make_client(settings, auth_failure_limit=4) as first:
        for _ in range(3):
            first.get("/v1/jobs", headers=bearer("cvk_wrong"))
    with make_client(settings, auth_failure_limit=4) as second:  # another API process
        second.get("/v1/jobs", headers=bearer("cvk_wrong"))  # its first failure here
        assert second.get("/v1/jobs", headers=bearer("cvk_wrong")).status_code == 429


def test_throttle_falls_back_to_a_per_process_limit_without_redis(
    settings: Settings, sessions: db.Sessions, private_redis: services.RedisServer
) -> None:
    with make_client(settings, auth_failure_limit=3, redis_url=private_redis.url) as limited:
        private_redis.stop()
        codes = [limited.get("/v1/jobs", headers=bearer("cvk_x")).status_code for _ in range(5)]

    assert codes == [401, 401, 401, 429, 429]


# --- bounded integers ------------------------------------------------------------------------


def test_integers_past_bigint_are_422_not_500(client: TestClient, admin: dict[str, str]) -> None:
    job_id = submit(client, admin)
    huge_cursor = page_cursor.encode(2**70, 1)

    too_far = client.get(f"/v1/jobs/{job_id}/events?after={2**63}", headers=admin)
    cursor = client.get(f"/v1/jobs/{job_id}/errors?cursor={huge_cursor}", headers=admin)
    attempts = client.post(
        "/v1/jobs", json={"kind": "noop", "params": {"fail_attempts": 10**30}}, headers=admin
    )

    assert_problem(too_far, 422, "invalid_request")
    assert cursor.status_code in (404, 422)  # not an import: 404; never a 500
    assert_problem(attempts, 422, "invalid_request")
    nul = client.get("/v1/jobs?kind=a%00b", headers=admin)  # PostgreSQL text holds no NUL
    assert_problem(nul, 422, "invalid_request")
    assert "NUL" in nul.json()["message"]
    assert client.get(f"/v1/jobs/{job_id}/events?after={2**63 - 1}", headers=admin).is_success


# --- /metrics --------------------------------------------------------------------------------


def test_metrics_need_the_token_or_are_not_served(
    settings: Settings, sessions: db.Sessions
) -> None:
    with make_client(settings) as with_token:
        assert_problem(with_token.get("/metrics"), 401, "unauthenticated")
        assert_problem(with_token.get("/metrics", headers=bearer("nope")), 401, "unauthenticated")
        scraped = with_token.get("/metrics", headers=services.METRICS_HEADERS)
    assert scraped.status_code == 200
    assert "conveyor_jobs" in scraped.text

    with make_client(settings, metrics_token=None) as without:
        assert_problem(without.get("/metrics", headers=services.METRICS_HEADERS), 404, "not_found")


def test_metrics_on_a_separate_loopback_port_need_no_token(
    settings: Settings, sessions: db.Sessions
) -> None:
    port = services.free_port()
    with make_client(settings, metrics_token=None, metrics_port=port) as client:
        assert client.get("/metrics").status_code == 404
        separate = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert separate.status_code == 200
    assert "conveyor_jobs" in separate.text
    with pytest.raises(httpx.ConnectError):  # closed with the app
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1)


# --- revoking keys ---------------------------------------------------------------------------


def key_id(sessions: db.Sessions, name: str) -> uuid.UUID:
    with db.transaction(sessions) as session:
        row = session.query(ApiKey).filter_by(name=name).one()
        return row.id


def test_revoking_a_key_cancels_its_queued_jobs(
    client: TestClient, sessions: db.Sessions, settings: Settings, admin: dict[str, str]
) -> None:
    mallory = bearer(services.new_api_key(sessions, settings, Role.submitter, "mallory"))
    kept = bearer(services.new_api_key(sessions, settings, Role.submitter, "kept"))
    queued = [submit(client, mallory) for _ in range(3)]
    running = submit(client, mallory)
    with db.transaction(sessions) as session:  # as if a worker had claimed it
        job = session.get(Job, uuid.UUID(running))
        assert job is not None
        job.status = JobStatus.running.value
    other = submit(client, kept)

    revoked = client.delete(f"/v1/api-keys/{key_id(sessions, 'mallory')}", headers=admin)
    kept_jobs = client.delete(
        f"/v1/api-keys/{key_id(sessions, 'kept')}?cancel_jobs=false", headers=admin
    )

    assert revoked.status_code == 204
    assert kept_jobs.status_code == 204
    assert {job_row(sessions, job_id).status for job_id in queued} == {"cancelled"}
    assert job_row(sessions, running).cancel_requested
    assert job_row(sessions, other).status == "queued"
    assert client.get("/v1/jobs", headers=mallory).status_code == 401


def test_the_last_admin_key_cannot_be_revoked(
    client: TestClient, sessions: db.Sessions, settings: Settings, admin: dict[str, str]
) -> None:
    second = bearer(services.new_api_key(sessions, settings, Role.admin, "second"))

    assert client.delete(f"/v1/api-keys/{key_id(sessions, 'second')}", headers=admin).is_success
    last = client.delete(f"/v1/api-keys/{key_id(sessions, 'admin')}", headers=admin)

    assert_problem(last, 409, "last_admin_key")
    assert client.get("/v1/api-keys", headers=admin).status_code == 200
    assert client.get("/v1/api-keys", headers=second).status_code == 401
