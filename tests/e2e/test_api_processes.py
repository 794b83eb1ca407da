"""``conveyor api --workers N``: several API processes behind one port. A revoked key is
refused by the very next request whichever process answers (the key is checked inside each
request's statement, no cache), and each process's breaker series carries its own label."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from core import api_keys, db
from core.api_keys import Role
from core.settings import Settings
from tests import services

NOOP = {"kind": "noop", "params": {}}


class PinnedConnection:
    """One keep-alive TCP connection to the API. uvicorn's worker processes share the
    listening socket and each accepted connection belongs to the one process that accepted
    it, so every request sent here is served by that process, which ``/metrics`` names (the
    ``process`` label of its breaker series). Each response is checked to have come over
    the same socket: a silent reconnect (possibly to the other process) fails the test
    instead of blurring who answered."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(
            base_url=url,
            timeout=5,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        self.local_address: Any = None
        self.process = self.answering_process()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        try:
            address = response.extensions["network_stream"].get_extra_info("client_addr")
        except OSError as error:  # the server closed the connection after answering
            raise AssertionError(f"{method} {path} did not keep the connection") from error
        if self.local_address is None:
            self.local_address = address
        assert address == self.local_address, f"reconnected: {address} != {self.local_address}"
        return response

    def answering_process(self) -> str:
        response = self.request("GET", "/metrics", headers=services.METRICS_HEADERS)
        assert response.status_code == 200
        for family in text_string_to_metric_families(response.text):
            if family.name == "conveyor_redis_breaker_failure_count":
                return str(family.samples[0].labels["process"])
        raise AssertionError("no breaker series")


def one_connection_per_process(url: str, processes: int) -> dict[str, PinnedConnection]:
    """Fresh connections until each process holds one (the kernel spreads them)."""
    pinned: dict[str, PinnedConnection] = {}
    for _ in range(60):
        connection = PinnedConnection(url)
        if connection.process in pinned:
            connection.client.close()
        else:
            pinned[connection.process] = connection
        if len(pinned) == processes:
            return pinned
    raise AssertionError(f"only {sorted(pinned)} answered")


def test_revoked_key_is_refused_at_once_by_every_api_process(
    platform: services.Platform, sessions: db.Sessions, settings: Settings
) -> None:
    # Many refused requests follow: keep the failed-authentication throttle out of the way.
    platform.start_api({"CONVEYOR_AUTH_FAILURE_LIMIT": "1000"}, workers=2)
    url = platform.api_url
    assert url is not None
    plain = services.new_api_key(sessions, settings, Role.submitter, "soon-revoked")
    headers = {"Authorization": f"Bearer {plain}"}

    with contextlib.ExitStack() as stack:
        connections = one_connection_per_process(url, processes=2)
        for connection in connections.values():
            stack.callback(connection.client.close)

        jobs: dict[str, str] = {}
        for process, connection in connections.items():  # each process accepts the key
            response = connection.request("POST", "/v1/jobs", json=NOOP, headers=headers)
            assert response.status_code == 202, (process, response.text)
            jobs[process] = response.json()["id"]
            read = connection.request("GET", f"/v1/jobs/{jobs[process]}", headers=headers)
            assert read.status_code == 200, (process, read.text)

        with db.transaction(sessions) as session:
            key_id = next(k.id for k in api_keys.list_keys(session) if k.name == "soon-revoked")
            api_keys.revoke_key(session, key_id=key_id)

        for process, connection in connections.items():  # the very next request is refused
            for method, path, body in (
                ("GET", f"/v1/jobs/{jobs[process]}", None),
                ("GET", "/v1/jobs", None),
                ("POST", "/v1/jobs", NOOP),
                ("POST", "/v1/jobs/batch", {"jobs": [NOOP]}),
                ("POST", f"/v1/jobs/{uuid.uuid4()}/cancel", None),
            ):
                response = connection.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (process, method, path, response.text)
                assert response.json()["code"] == "unauthenticated"
            # The same process served all of it, before and after the revocation.
            assert connection.answering_process() == process
