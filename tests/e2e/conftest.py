"""E2E helpers: an HTTP client with a fresh API key, and polling for job states."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from core import db
from core.api_keys import Role
from core.settings import Settings
from tests import services


@pytest.fixture
def api_client(
    platform: services.Platform, sessions: db.Sessions, settings: Settings
) -> Iterator[Callable[..., httpx.Client]]:
    """Factory: ``api_client(role)`` -> a client for the running API with a new key."""
    clients: list[httpx.Client] = []

    def factory(role: Role = Role.submitter) -> httpx.Client:
        assert platform.api_url, "start the API first"
        key = services.new_api_key(sessions, settings, role)
        client = httpx.Client(
            base_url=platform.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


def poll_job(
    client: httpx.Client,
    job_id: str,
    until: Callable[[dict[str, Any]], bool],
    *,
    timeout: float = 60,
) -> dict[str, Any]:
    """GET the job until ``until(job)`` holds; fail with the last state seen."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if until(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not as expected after {timeout}s: {job}")
        time.sleep(0.05)


def wait_for_job(
    client: httpx.Client,
    job_id: str,
    statuses: set[str],
    *,
    timeout: float = 60,
    on_poll: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    def reached(job: dict[str, Any]) -> bool:
        if on_poll is not None:
            on_poll(job)
        return job["status"] in statuses

    return poll_job(client, job_id, reached, timeout=timeout)
