"""Deployments on real processes: HTTP API → PostgreSQL → Redis → a Celery worker on the
``deployments`` queue → ansible-runner → ansible-playbook → ssh → a real sshd.

One platform (API, one deployments worker of concurrency 3) and one sshd serve the
whole module; each case uses its own target files and job ids.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.deploy_client import sse_events
from tests.conftest import settings_env
from tests.e2e.deploy_support import (
    SSH_KEY_SECRET,
    DeployPlatform,
    deploy_settings,
    processes_of,
    running_deploy_platform,
    target,
    wait_for,
)
from tests.git_server import GitServer
from tests.services import VENV_BIN, free_port
from tests.sshd import Sshd

pytestmark = [pytest.mark.e2e, pytest.mark.slow(150)]

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


def _stream(
    client: httpx.Client, job_id: str, *, last_event_id: str | None, stop_after: int | None
):
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


def test_failing_task_fails_without_retry_and_cli_exits_1(deploy):
    """Through ``conveyor deploy --follow``: the log streams to stdout, the exit code is the
    job's outcome, and a failed task is not retried (the default policy)."""
    sshd = deploy.sshd
    argv = [
        str(VENV_BIN / "conveyor"),
        "deploy",
        "--project",
        "demo",
        "--playbook",
        "fail.yml",
        "--target",
        f"web={sshd.user}@127.0.0.1:{sshd.port}",
        "--ssh-key-ref",
        SSH_KEY_SECRET,
        "-e",
        "ansible_python_interpreter=/usr/bin/python3",
        "--follow",
    ]
    env = {
        **settings_env(deploy.settings),
        "CONVEYOR_API_URL": deploy.platform.api_url or "",
        "CONVEYOR_API_KEY": deploy.client.headers["Authorization"].removeprefix("Bearer "),
    }
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "TASK [this task fails]" in done.stdout
    assert "Deployment failed. deployment_failed" in done.stdout
    job_id = done.stdout.split("Deployment job ", 1)[1].split()[0]

    job = deploy.job(job_id)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "deployment_failed"
    assert "web" in job["error"]["message"]
    assert job["result"]["recap"]["web"]["failed"] == 1
    runs = deploy.events(job_id, "deployment_run")
    assert [run["data"]["outcome"] for run in runs] == ["failed"]
    assert runs[0]["data"]["retry_in"] is None
    assert job["attempt"] == 1


def test_unreachable_target_is_retried_with_backoff_then_fails(deploy):
    dead = target(deploy.sshd, name="gone") | {"port": free_port()}
    body = deploy.body("touch.yml", [dead], extra_vars={"dest": "/nonexistent"})
    body["retry"] = {"max_attempts": 3, "backoff_seconds": 1}
    started = time.monotonic()
    job = deploy.wait(deploy.submit(body))
    elapsed = time.monotonic() - started

    assert job["status"] == "failed", job
    assert job["error"]["code"] == "host_unreachable"
    runs = [event["data"] for event in deploy.events(job["id"], "deployment_run")]
    assert [run["outcome"] for run in runs] == ["unreachable"] * 3
    delays = [run["retry_in"] for run in runs]
    assert delays[2] is None
    # Exponential with jitter: run n waits between half and all of backoff * 2^(n-1).
    assert 0.5 <= delays[0] <= 1.0
    assert 1.0 <= delays[1] <= 2.0
    assert elapsed >= delays[0] + delays[1]
    assert job["result"]["recap"]["gone"]["unreachable"] == 1


def test_cancel_kills_the_ansible_process_tree_and_frees_the_target(deploy, tmp_path):
    host = target(deploy.sshd, "127.0.0.2")
    record = tmp_path / "long"
    job_id = deploy.submit(
        deploy.body("window.yml", [host], extra_vars={"seconds": 60, "record": str(record)})
    )
    wait_for(lambda: Path(f"{record}.start").exists(), timeout=60, message="the task started")
    assert processes_of(job_id), "no ansible process found while the task runs"

    response = deploy.client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202, response.text
    cancelled_at = time.monotonic()
    job = deploy.wait(job_id, timeout=30)
    assert job["status"] == "cancelled", job
    assert time.monotonic() - cancelled_at < 15
    assert processes_of(job_id) == []
    assert not Path(f"{record}.end").exists()

    # The target's lock went with the job: the next deployment to it runs at once.
    dest = tmp_path / "after-cancel.txt"
    after = deploy.wait(
        deploy.submit(deploy.body("touch.yml", [host], extra_vars={"dest": str(dest)}))
    )
    assert after["status"] == "succeeded", after
    assert dest.exists()


def test_memory_limit_exceeded_fails_the_job(deploy):
    body = deploy.body("hog.yml", [target(deploy.sshd, "127.0.0.3")])
    body["limits"] = {"memory_mb": 256}
    job = deploy.wait(deploy.submit(body))
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "resource_limit_exceeded"
    assert "256 MB" in job["error"]["message"]
    runs = deploy.events(job["id"], "deployment_run")
    assert [run["data"]["outcome"] for run in runs] == ["resource_limit_exceeded"]
    assert processes_of(job["id"]) == []


def _intervals(records: list[Path]) -> list[tuple[float, float]]:
    spans = []
    for record in records:
        start = float(Path(f"{record}.start").read_text().split()[0])
        end = float(Path(f"{record}.end").read_text())
        spans.append((start, end))
    return spans


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    points = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in points:
        running += step
        peak = max(peak, running)
    return peak


def test_global_cap_and_target_lock(deploy, tmp_path):
    """Cap 2: the third deployment to a third host waits (concurrency_limit, naming a
    running job) and starts by itself; two deployments to one host never overlap."""
    records = [tmp_path / f"cap-{n}" for n in range(3)]
    jobs = [
        deploy.submit(
            deploy.body(
                "window.yml",
                [target(deploy.sshd, address)],
                extra_vars={"seconds": 4, "record": str(record)},
            )
        )
        for address, record in zip(ADDRESSES, records, strict=True)
    ]
    waiting = wait_for(
        lambda: [job for job in map(deploy.job, jobs) if job["waiting_reason"]],
        timeout=60,
        message="a deployment waiting for the cap",
    )
    assert waiting[0]["waiting_reason"] == "concurrency_limit"
    reason = deploy.events(waiting[0]["id"], "waiting")[0]["data"]
    assert reason["reason"] == "concurrency_limit"
    assert reason["blocking_job_id"] in jobs
    assert all(deploy.wait(j)["status"] == "succeeded" for j in jobs)
    assert _max_overlap(_intervals(records)) == 2

    one_host = target(deploy.sshd, "127.0.0.1")
    same = [tmp_path / "same-a", tmp_path / "same-b"]
    first = deploy.submit(
        deploy.body("window.yml", [one_host], extra_vars={"seconds": 3, "record": str(same[0])})
    )
    wait_for(lambda: deploy.job(first)["status"] == "running", timeout=30, message="first runs")
    second = deploy.submit(
        deploy.body("window.yml", [one_host], extra_vars={"seconds": 3, "record": str(same[1])})
    )
    blocked = wait_for(
        lambda: (job := deploy.job(second))["waiting_reason"] and job,
        timeout=30,
        message="second waits for the target",
    )
    assert blocked["waiting_reason"] == "target_busy"
    detail = deploy.events(second, "waiting")[0]["data"]
    assert detail == {
        "reason": "target_busy",
        "target": f"127.0.0.1:{deploy.sshd.port}",
        "blocking_job_id": first,
    }
    assert deploy.wait(first)["status"] == deploy.wait(second)["status"] == "succeeded"
    assert _max_overlap(_intervals(same)) == 1


GIT_TOKEN = "ghp_" + secrets.token_hex(16)
LEAK_PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - name: print the password
      ansible.builtin.debug:
        msg: "the password is {{ db_password }}"
    - name: print the private key
      ansible.builtin.debug:
        msg: "{{ lookup('file', ansible_ssh_private_key_file) }}"
    - name: "a task named after {{ db_password }}"
      ansible.builtin.command: echo "{{ db_password }}"
      changed_when: false
"""


@pytest.fixture(scope="module")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    server = GitServer(tmp_path_factory.mktemp("git"), token=GIT_TOKEN).start()
    yield server
    server.stop()


def _monitor_redis(url: str, out: Path) -> subprocess.Popen[bytes]:
    """Everything sent to Redis (Celery messages included) while the test runs."""
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    monitor = subprocess.Popen(
        ["redis-cli", "-h", host, "-p", port, "monitor"],
        stdout=out.open("wb"),
        stderr=subprocess.STDOUT,
    )
    wait_for(lambda: out.stat().st_size > 0, timeout=10, message="redis MONITOR started")
    return monitor


def _pg_dump(database_url: str) -> str:
    done = subprocess.run(["pg_dump", database_url], capture_output=True, text=True, check=True)
    return done.stdout


def test_secrets_never_leak(deploy, git_server, database_url, tmp_path):
    password = "pw-" + secrets.token_hex(12)
    key_lines = [line for line in deploy.sshd.client_key.splitlines() if len(line) >= 20]
    for name, value in (("git-token", GIT_TOKEN), ("app-vars", {"db_password": password})):
        stored = deploy.client.put(f"/v1/secrets/{name}", json={"value": value})
        assert stored.status_code == 200, stored.text
    url = git_server.add_repo("leaky", {"leak.yml": LEAK_PLAYBOOK})
    monitor = _monitor_redis(deploy.settings.redis_url, tmp_path / "redis-monitor.txt")
    try:
        body = deploy.body(
            "leak.yml",
            [target(deploy.sshd, name="leaky")],
            source={"git": {"url": url, "ref": "main"}},
            github_token_ref="git-token",
            secrets_ref="app-vars",
        )
        job = deploy.wait(deploy.submit(body))
    finally:
        monitor.terminate()
        monitor.wait(10)
    assert job["status"] == "succeeded", job
    assert git_server.served > 0

    logs = deploy.logs(job["id"])
    printed = [line["line"] for line in logs if line["event"] == "runner_on_ok"]
    assert any("the password is ********" in line for line in printed)
    assert any("a task named after ********" in (line["task"] or "") for line in logs)
    assert job["params"]["secrets_ref"] == "app-vars"

    secret_values = [GIT_TOKEN, password, *key_lines]
    places = {
        "logs": json.dumps(logs),
        "events": json.dumps(deploy.events(job["id"])),
        "job": json.dumps(deploy.job(job["id"])),
        "secrets list": deploy.client.get("/v1/secrets").text,
        "celery messages (redis MONITOR)": (tmp_path / "redis-monitor.txt").read_text(
            errors="replace"
        ),
        "pg_dump": _pg_dump(database_url),
        **{f"{process.name} log": process.output() for process in deploy.platform.processes},
    }
    assert "conveyor.jobs.deployment" in places["celery messages (redis MONITOR)"]
    for place, text in places.items():
        for value in secret_values:
            assert value not in text, f"a secret value was found in the {place}"
    run_root = deploy.settings.deploy_run_dir
    assert run_root is not None
    assert list(run_root.iterdir()) == [], "files left in the run directory"
    assert processes_of(job["id"]) == []


def test_clone_without_the_token_and_a_missing_secret_fail_clearly(deploy, git_server):
    url = git_server.add_repo("private", {"site.yml": "- hosts: all\n  tasks: []\n"})
    refused_before = git_server.refused
    no_token = deploy.body("site.yml", [target(deploy.sshd)], source={"git": {"url": url}})
    job = deploy.wait(deploy.submit(no_token))
    assert job["status"] == "failed"
    assert job["error"]["code"] == "git_clone_failed"
    assert git_server.refused > refused_before

    missing = deploy.body("touch.yml", [target(deploy.sshd)], secrets_ref="no-such-secret")
    job = deploy.wait(deploy.submit(missing))
    assert job["status"] == "failed"
    assert job["error"]["code"] == "secret_not_found"
    assert "'no-such-secret' (secrets_ref)" in job["error"]["message"]
