"""Outages. With Redis dead the API keeps accepting jobs (into the outbox) and answering from
PostgreSQL; the relay publishes the backlog once Redis is back. With PostgreSQL unreachable the
API answers 503 problems (and stays alive)."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import cast

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.dispatcher import Dispatcher
from core import db
from core.models import Job
from core.settings import Settings
from tests import services

SLEEP = {"kind": "sleep", "params": {"seconds": 1}}


@pytest.fixture
def redis_settings(settings: Settings, private_redis: services.RedisServer) -> Settings:
    return settings.model_copy(update={"redis_url": private_redis.url})


@pytest.fixture
def headers(sessions: db.Sessions, settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {services.new_api_key(sessions, settings)}"}


@pytest.fixture
def client(redis_settings: Settings, sessions: db.Sessions) -> Iterator[TestClient]:
    with TestClient(create_app(redis_settings)) as test_client:
        yield test_client


def dispatched_at(sessions: db.Sessions, job_id: str) -> object:
    with db.transaction(sessions) as session:
        job = session.get(Job, uuid.UUID(job_id))
        assert job is not None
        return job.dispatched_at


def test_redis_down_degrades_but_accepts_jobs(
    client: TestClient,
    headers: dict[str, str],
    sessions: db.Sessions,
    private_redis: services.RedisServer,
) -> None:
    private_redis.stop()

    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["database"]["status"] == "up"
    assert ready.json()["checks"]["redis"]["status"] == "down"
    assert "outbox" in ready.json()["detail"]
    assert ready.json()["queues"] == {"default": None, "imports": None, "deployments": None}

    redis_health = client.get("/health/redis").json()
    assert redis_health["status"] == "down"
    assert redis_health["error"]

    started = time.monotonic()
    response = client.post("/v1/jobs", json=SLEEP, headers=headers)
    assert response.status_code == 202, response.text
    assert time.monotonic() - started < 2
    job_id = response.json()["id"]
    # The publish was tried (by the dispatcher) and failed: the job waits.
    dispatcher: Dispatcher = cast(FastAPI, client.app).state.dispatcher
    services.wait_until(lambda: dispatcher.idle, timeout=5, message="publish tried")
    assert dispatched_at(sessions, job_id) is None

    # Status is still served from PostgreSQL.
    assert client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"] == "queued"
    outbox = client.get("/health/ready").json()["outbox"]
    assert outbox["undispatched"] == 1


def test_breaker_opens_and_relay_publishes_after_recovery(
    client: TestClient,
    headers: dict[str, str],
    sessions: db.Sessions,
    redis_settings: Settings,
    private_redis: services.RedisServer,
) -> None:
    private_redis.stop()
    job_ids = [client.post("/v1/jobs", json=SLEEP, headers=headers).json()["id"] for _ in range(3)]
    # Failed publishes and pings trip the breaker; then calls are refused without waiting.
    services.wait_until(
        lambda: client.get("/health/circuit-breaker").json()["state"] == "open",
        timeout=10,
        message="breaker open",
    )
    snapshot = client.get("/health/circuit-breaker").json()
    assert snapshot["failures"] >= snapshot["fail_max"]
    assert snapshot["opened_at"] is not None
    started = time.monotonic()
    assert client.get("/health/redis").json() == {
        "status": "down",
        "latency_ms": pytest.approx(0, abs=50),
        "breaker": "open",
        "error": "CircuitBreakerError",
    }
    assert time.monotonic() - started < 0.5
    assert all(dispatched_at(sessions, job_id) is None for job_id in job_ids)

    private_redis.start()
    services.wait_until(
        lambda: all(dispatched_at(sessions, job_id) is not None for job_id in job_ids),
        timeout=redis_settings.breaker_reset_timeout * 3 + 5,
        message="relay to publish the backlog",
    )
    broker = redis.Redis.from_url(private_redis.url)
    try:
        assert broker.llen("default") >= len(job_ids)
    finally:
        broker.close()
    assert client.get("/health/circuit-breaker").json()["state"] == "closed"


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples by name and labels; the breaker's ``process`` label (this process, as the
    test client runs the app in it) is checked and left out of the key."""
    response = client.get("/metrics", headers=services.METRICS_HEADERS)
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if sample.name.startswith("conveyor_redis_breaker_"):
                assert labels.pop("process") == f"{socket.gethostname()}:{os.getpid()}"
            samples[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return samples


def test_metrics_show_breaker_outbox_queues_and_jobs(
    client: TestClient, headers: dict[str, str], private_redis: services.RedisServer
) -> None:
    assert client.post("/v1/jobs", json=SLEEP, headers=headers).status_code == 202
    services.wait_until(
        lambda: scrape(client)[("conveyor_outbox_undispatched", ())] == 0,
        timeout=5,
        message="the job published",
    )
    up = scrape(client)
    assert up[("conveyor_redis_up", ())] == 1
    assert up[("conveyor_queue_depth", (("queue", "default"),))] == 1
    assert up[("conveyor_jobs", (("status", "queued"),))] == 1
    assert up[("conveyor_jobs", (("status", "running"),))] == 0
    assert up[("conveyor_outbox_undispatched", ())] == 0
    assert up[("conveyor_redis_breaker_state", (("state", "closed"),))] == 1
    assert up[("conveyor_database_up", ())] == 1
    assert ("process_resident_memory_bytes", ()) in up

    private_redis.stop()
    assert client.post("/v1/jobs", json=SLEEP, headers=headers).status_code == 202
    services.wait_until(
        lambda: client.get("/health/circuit-breaker").json()["state"] == "open",
        timeout=10,
        message="breaker open",
    )
    down = scrape(client)
    assert down[("conveyor_redis_up", ())] == 0
    assert not any(name == "conveyor_queue_depth" for name, _ in down)
    assert down[("conveyor_redis_breaker_state", (("state", "open"),))] == 1
    assert down[("conveyor_redis_breaker_state", (("state", "closed"),))] == 0
    assert down[("conveyor_redis_breaker_state_changes_total", ())] >= 1
    assert down[("conveyor_redis_breaker_failures_total", ())] >= 5
    assert down[("conveyor_redis_breaker_rejections_total", ())] >= 1
    assert down[("conveyor_outbox_undispatched", ())] == 1
    assert down[("conveyor_outbox_oldest_age_seconds", ())] > 0
    assert down[("conveyor_jobs", (("status", "queued"),))] == 2


def test_database_down_is_503(settings: Settings, sessions: db.Sessions) -> None:
    # Nothing listens on the port: connections are refused at once.
    unreachable = f"postgresql://postgres@127.0.0.1:{services.free_port()}/conveyor"
    down = settings.model_copy(update={"database_url": unreachable})
    with TestClient(create_app(down)) as client:
        assert client.get("/health/live").status_code == 200

        ready = client.get("/health/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "unavailable"
        assert body["code"] == "database_unavailable"
        assert body["checks"]["database"]["status"] == "down"
        assert body["checks"]["redis"]["status"] == "up"

        response = client.post("/v1/jobs", json=SLEEP, headers={"Authorization": "Bearer k"})
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "database_unavailable"
