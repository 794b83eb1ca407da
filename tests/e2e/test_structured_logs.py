"""In production mode (JSON logs) every line every process writes is one JSON record: the API
(uvicorn's own lines too), a worker (Celery's start-up warnings and its shutdown messages
too) and Flower (Tornado's lines too), from start to a clean stop."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.api_keys import Role
from tests import services
from tests.e2e.conftest import wait_for_job

pytestmark = pytest.mark.e2e


def test_every_line_of_every_process_is_a_json_record(
    platform: services.Platform, api_client: Any
) -> None:
    api = platform.start_api()
    worker = platform.start_worker(concurrency=1)
    flower, _ = platform.start_flower()
    client = api_client(Role.submitter)
    job = client.post("/v1/jobs", json={"kind": "noop"}).json()
    assert wait_for_job(client, job["id"], {"succeeded"}, timeout=30)
    assert client.get("/v1/jobs/not-a-uuid").status_code == 404

    for process in (api, worker, flower):
        process.stop()
        lines = process.output().splitlines()
        assert lines, process.name
        for line in lines:
            record = json.loads(line)  # fails on any line that is not JSON
            assert {"event", "level", "timestamp"} <= set(record), line
    worker_events = [json.loads(line)["event"] for line in worker.output().splitlines()]
    assert any("shutdown" in str(event).lower() for event in worker_events)
