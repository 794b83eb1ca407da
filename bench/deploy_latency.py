"""Deployment latency, measured on real processes (uvicorn API, one deployments worker, a
throwaway sshd, real Ansible):

1. submit (POST /v1/deployments) -> first log line on the SSE stream, and -> first Ansible
   event on it; baseline in the same run: ``ansible-playbook`` started directly -> its first
   line of output (what Ansible itself costs before it says anything);
2. log latency: each Ansible event's creation time (Ansible's callback clock, same machine)
   -> the SSE client receiving it.

Run: .venv/bin/python bench/deploy_latency.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli.deploy_client import sse_events
from core import db
from core.api_keys import Role
from core.settings import Settings
from tests import services
from tests.conftest import settings_env
from tests.e2e.deploy_support import PLAYBOOKS, SSH_KEY_SECRET, target, write_project
from tests.sshd import Sshd
from tests.submit_load import percentile


def _follow(
    client: httpx.Client, job_id: str, submitted: float
) -> tuple[float, float, list[float]]:
    first_line = first_event = 0.0
    lags: list[float] = []
    with client.stream("GET", f"/v1/jobs/{job_id}/logs/stream", timeout=120) as response:
        for event, data, _ in sse_events(response.iter_lines()):
            received = time.time()
            if event == "end":
                break
            line = json.loads(data)
            first_line = first_line or received - submitted
            created = line["data"].get("created")
            if line["event"] != "conveyor" and created:
                first_event = first_event or received - submitted
                lags.append(received - datetime.fromisoformat(created).timestamp())
    return first_line, first_event, lags


def _raw_first_output(sshd: Sshd, project: Path, key: Path) -> float:
    inventory = (
        f"t ansible_host=127.0.0.1 ansible_port={sshd.port} ansible_user={sshd.user} "
        f"ansible_ssh_private_key_file={key} ansible_python_interpreter=/usr/bin/python3\n"
    )
    (project / "hosts").write_text(inventory)
    started = time.time()
    process = subprocess.Popen(
        [
            str(services.VENV_BIN / "ansible-playbook"),
            "-i",
            str(project / "hosts"),
            "-e",
            f"dest={project / 'raw.txt'}",
            str(project / "touch.yml"),
        ],
        stdout=subprocess.PIPE,
        env={"PATH": f"{services.VENV_BIN}:/usr/bin:/bin", "ANSIBLE_HOST_KEY_CHECKING": "False"},
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.strip():
            first = time.time() - started
            break
    process.wait()
    return first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    assert "touch.yml" in PLAYBOOKS
    tmp = Path(tempfile.mkdtemp(prefix="deploy-bench-"))
    name = services.unique_name("conveyor_bench")
    url = services.create_migrated_database(name)
    redis_server = services.RedisServer(tmp)
    redis_server.start()
    sshd = Sshd(tmp / "sshd").start()
    settings = Settings(
        env="test",
        database_url=url,
        redis_url=redis_server.url,
        storage_dir=tmp / "storage",
        projects_dir=tmp / "projects",
        deploy_run_dir=Path(tempfile.mkdtemp(prefix="cvb-")) / "runs",
    )
    project = write_project(settings.projects_dir)
    key = tmp / "client_key"
    key.write_text(sshd.client_key)
    key.chmod(0o600)
    engine = db.make_engine(settings)
    api_key = services.new_api_key(db.make_sessionmaker(engine), settings, Role.operator)
    (tmp / "logs").mkdir()
    firsts, events, lags, raws = [], [], [], []
    try:
        with services.platform(settings_env(settings), tmp / "logs") as platform:
            platform.start_api()
            platform.start_worker(queues="deployments", concurrency=1)
            client = httpx.Client(
                base_url=platform.api_url or "",
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=30,
            )
            client.put(f"/v1/secrets/{SSH_KEY_SECRET}", json={"value": sshd.client_key})
            for run in range(args.runs):
                raws.append(_raw_first_output(sshd, project, key))
                body = {
                    "source": {"project": "demo"},
                    "playbook": "touch.yml",
                    "targets": [target(sshd)],
                    "extra_vars": {
                        "dest": str(tmp / f"out-{run}.txt"),
                        "ansible_python_interpreter": "/usr/bin/python3",
                    },
                    "ssh_key_ref": SSH_KEY_SECRET,
                }
                submitted = time.time()
                job_id = client.post("/v1/deployments", json=body).json()["id"]
                first_line, first_event, run_lags = _follow(client, job_id, submitted)
                firsts.append(first_line)
                events.append(first_event)
                lags += run_lags
            client.close()
    finally:
        sshd.stop()
        redis_server.stop()
        engine.dispose()
        services.drop_database(name)
        if settings.deploy_run_dir is not None:
            shutil.rmtree(settings.deploy_run_dir.parent, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.0f} ms"

    print(f"runs: {args.runs} (touch.yml, one target over ssh, 2-core machine)")
    print(f"submit -> first log line (SSE):      p50 {ms(firsts, 0.5)}, max {ms(firsts, 1.0)}")
    print(f"submit -> first Ansible event (SSE): p50 {ms(events, 0.5)}, max {ms(events, 1.0)}")
    print(f"raw ansible-playbook -> first output: p50 {ms(raws, 0.5)}, max {ms(raws, 1.0)}")
    ratio = percentile(raws, 0.5) / percentile(events, 0.5)
    print(f"ratio (raw / Conveyor, first Ansible output): {ratio:.2f}")
    print(
        f"log latency, Ansible event -> SSE client ({len(lags)} events): "
        f"p50 {ms(lags, 0.5)}, p95 {ms(lags, 0.95)}, max {ms(lags, 1.0)}"
    )


if __name__ == "__main__":
    main()
