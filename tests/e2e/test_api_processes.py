"""``conveyor api --workers N``: several API processes behind one port. A revoked key is
refused by the very next request whichever process answers (the key is checked inside each
request's statement, no cache), and each process's breaker series carries its own label."""

from __future__ import annotations

import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

from core import api_keys, db
from core.api_keys import Role
from core.settings import Settings
from tests import services

NOOP = {"kind": "noop", "params": {}}


def answering_process(api_url: str) -> str:
    """The ``process`` label of the breaker series of whichever process took this fresh
    connection."""
    response = httpx.get(f"{api_url}/metrics", headers=services.METRICS_HEADERS, timeout=5)
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        if family.name == "conveyor_redis_breaker_failure_count":
            return str(family.samples[0].labels["process"])
    raise AssertionError("no breaker series")


def test_revoked_key_is_refused_at_once_by_every_api_process(
    platform: services.Platform, sessions: db.Sessions, settings: Settings
) -> None:
    # Many refused requests follow: keep the failed-authentication throttle out of the way.
    platform.start_api({"CONVEYOR_AUTH_FAILURE_LIMIT": "1000"}, workers=2)
    url = platform.api_url
    assert url is not None
    seen = {answering_process(url) for _ in range(40)}
    assert len(seen) == 2, seen  # both processes answer on the one port

    plain = services.new_api_key(sessions, settings, Role.submitter, "soon-revoked")
    headers = {"Authorization": f"Bearer {plain}"}
    job_id = None
    for _ in range(20):  # fresh connections: both processes accept the key
        response = httpx.post(f"{url}/v1/jobs", json=NOOP, headers=headers, timeout=5)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]

    with db.transaction(sessions) as session:
        key_id = next(k.id for k in api_keys.list_keys(session) if k.name == "soon-revoked")
        api_keys.revoke_key(session, key_id=key_id)

    for _ in range(20):  # the very next request, on any process, is refused
        for method, path, body in (
            ("GET", f"/v1/jobs/{job_id}", None),
            ("GET", "/v1/jobs", None),
            ("POST", "/v1/jobs", NOOP),
            ("POST", "/v1/jobs/batch", {"jobs": [NOOP]}),
            ("POST", f"/v1/jobs/{uuid.uuid4()}/cancel", None),
        ):
            response = httpx.request(method, f"{url}{path}", json=body, headers=headers, timeout=5)
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["code"] == "unauthenticated"
