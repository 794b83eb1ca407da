"""``conveyor submit`` and the Python client (cli.jobs_client) against a real API process:
both go through POST /v1/jobs/batch, 1,000 per request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from cli.jobs_client import ApiError, JobsClient
from core import db
from core.models import Job
from core.settings import Settings
from tests import services
from tests.conftest import settings_env

CONVEYOR = Path(sys.executable).parent / "conveyor"


def job_count(sessions: db.Sessions) -> int:
    with db.transaction(sessions) as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(Job)) or 0)


def test_python_client_submits_many_in_batches(
    platform: services.Platform, sessions: db.Sessions, settings: Settings
) -> None:
    platform.start_api()
    assert platform.api_url
    key = services.new_api_key(sessions, settings)
    with JobsClient(platform.api_url, key) as client:
        submissions = [{"kind": "noop"}] * 2100 + [{"kind": "nope"}]
        items = list(client.submit_many(submissions))
        assert len(items) == 2101
        assert [item["status"] for item in items[:2100]] == [202] * 2100
        assert items[2100]["problem"]["where"] == {"field": "jobs.100.kind"}  # 3rd request
        assert len({item["job"]["id"] for item in items[:2100]}) == 2100
        assert client.get(items[0]["job"]["id"])["kind"] == "noop"
        one = client.submit("sleep", {"seconds": 1}, idempotency_key="k")
        assert client.submit("sleep", {"seconds": 1}, idempotency_key="k")["id"] == one["id"]
    assert job_count(sessions) == 2101
    with (
        JobsClient(platform.api_url, "cvk_wrong") as client,
        pytest.raises(ApiError) as refused,
    ):
        list(client.submit_many([{"kind": "noop"}]))
    assert refused.value.status_code == 401


def test_conveyor_submit_command(
    platform: services.Platform, sessions: db.Sessions, settings: Settings, tmp_path: Path
) -> None:
    platform.start_api()
    assert platform.api_url
    key = services.new_api_key(sessions, settings)
    env = {**settings_env(settings), "CONVEYOR_API_URL": platform.api_url}
    env["CONVEYOR_API_KEY"] = key
    result = subprocess.run(
        [str(CONVEYOR), "submit", "--kind", "noop", "--count", "1500"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1500
    assert all(line.startswith("202 ") for line in lines)
    assert job_count(sessions) == 1500

    jobs = tmp_path / "jobs.jsonl"
    entries = [
        {"kind": "sleep", "params": {"seconds": 1}, "idempotency_key": "x"},
        {"kind": "sleep", "params": {"seconds": -5}},
        {"kind": "sleep", "params": {"seconds": 1}, "idempotency_key": "x"},
    ]
    jobs.write_text("\n".join(json.dumps(entry) for entry in entries) + "\n")
    result = subprocess.run(
        [str(CONVEYOR), "submit", "--file", str(jobs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr  # one entry refused
    first, refused, replay = result.stdout.splitlines()
    assert first.startswith("202 ")
    assert refused.startswith("422 invalid_request: jobs.1.params.seconds")
    assert replay == "200 " + first.split()[1]
    assert job_count(sessions) == 1501

    # No API there: a one-line error and exit 2, never a traceback.
    down = {**env, "CONVEYOR_API_URL": f"http://127.0.0.1:{services.free_port()}"}
    result = subprocess.run(
        [str(CONVEYOR), "submit", "--kind", "noop"],
        env=down,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "cannot talk to the API at http://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr
