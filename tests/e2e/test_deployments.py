"""Deployments on real processes: HTTP API → PostgreSQL → Redis → a Celery worker on the
``deployments`` queue → ansible-runner → ansible-playbook → ssh → a real sshd.

One platform (API, one deployments worker of concurrency 3, beat) and one sshd serve the
whole module; each case uses its own target files and job ids.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.deploy_client import sse_events
from tests.e2e.deploy_support import (
    DeployPlatform,
    deploy_settings,
    processes_of,
    running_deploy_platform,
    target,
    wait_for,
)
from tests.sshd import Sshd

pytestmark = pytest.mark.e2e

ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    server = Sshd(tmp_path_factory.mktemp("sshd"), addresses=ADDRESSES).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def deploy(database_url, session_redis, engine, sshd, tmp_path_factory) -> Iterator[DeployPlatform]:
    tmp = tmp_path_factory.mktemp("deployments")
    settings = deploy_settings(database_url, session_redis, tmp)
    yield from running_deploy_platform(settings, engine, tmp / "logs", sshd)


def _stream(client: httpx.Client, job_id: str, *, last_event_id: str | None, stop_after: int | None):
    """(events seen, ended) reading the SSE stream; stops (disconnects) after ``stop_after``
    log events."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    seen: list[tuple[str, str, str | None]] = []
    with client.stream(
        "GET", f"/v1/jobs/{job_id}/logs/stream", headers=headers, timeout=90
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in sse_events(response.iter_lines()):
            seen.append(event)
            if event[0] == "end":
                return seen, True
            if stop_after is not None and len(seen) >= stop_after:
                return seen, False
    return seen, False


def test_playbook_creates_file_and_stream_resumes_without_gaps(deploy, tmp_path):
    dest = tmp_path / "deployed.txt"
    job_id = deploy.submit(
        deploy.body("touch.yml", [target(deploy.sshd)], extra_vars={"dest": str(dest)})
    )
    # Follow live, drop the connection after three lines, resume with Last-Event-ID.
    first, ended = _stream(deploy.client, job_id, last_event_id=None, stop_after=3)
    assert not ended
    rest, ended = _stream(deploy.client, job_id, last_event_id=first[-1][2], stop_after=None)
    assert ended
    assert json.loads(rest[-1][1])["status"] == "succeeded"

    job = deploy.wait(job_id)
    assert job["status"] == "succeeded", job
    assert dest.read_text() == "deployed by t-127-0-0-1\n"
    recap = job["result"]["recap"]
    assert recap["t-127-0-0-1"]["changed"] == 1
    assert recap["t-127-0-0-1"]["failed"] == recap["t-127-0-0-1"]["unreachable"] == 0
    assert job["result"]["runs"][0]["outcome"] == "succeeded"

    streamed = [event for event in first + rest if event[0] == "log"]
    ids = [int(event_id) for _, _, event_id in streamed if event_id]
    stored = deploy.logs(job_id)
    assert ids == [line["id"] for line in stored], "the resumed stream lost or repeated lines"
    assert [json.loads(data)["line"] for _, data, _ in streamed] == [s["line"] for s in stored]
    ansible_events = [line["event"] for line in stored if line["event"] != "conveyor"]
    assert ansible_events[0] == "playbook_on_start"
    assert ansible_events[-1] == "playbook_on_stats"
    assert "runner_on_ok" in ansible_events
    assert any("wrote " + str(dest) in line["line"] for line in stored)
    assert processes_of(job_id) == []
