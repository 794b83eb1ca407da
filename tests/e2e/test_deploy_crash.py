"""A deployments worker SIGKILLed in the middle of an Ansible run: the guard's parent-death
signal ends the whole Ansible tree (no orphan ``ansible-playbook`` under init), the lease
expires, and another worker runs the deployment again as attempt 2."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from core import db
from core.api_keys import Role
from tests import services
from tests.conftest import settings_env
from tests.e2e.deploy_support import (
    SSH_KEY_SECRET,
    deploy_settings,
    processes_of,
    target,
    wait_for,
    write_project,
)
from tests.e2e.import_support import flush_redis, wait_terminal
from tests.sshd import Sshd

pytestmark = [pytest.mark.e2e, pytest.mark.slow(70)]


def test_killed_worker_leaves_no_orphan_and_the_deployment_recovers(
    database_url, session_redis, engine, tmp_path
):
    settings = deploy_settings(database_url, session_redis, tmp_path)
    write_project(settings.projects_dir)
    flush_redis(settings.redis_url)
    sshd = Sshd(Path(tempfile.mkdtemp(prefix="sshd-"))).start()
    sessions = db.make_sessionmaker(engine)
    key = services.new_api_key(sessions, settings, Role.operator)
    record = tmp_path / "window"
    (tmp_path / "logs").mkdir()
    try:
        with services.platform(settings_env(settings), tmp_path / "logs") as platform:
            platform.start_api()
            doomed = platform.start_worker(queues="deployments", concurrency=1)
            client = httpx.Client(
                base_url=platform.api_url or "",
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            assert client.put(
                f"/v1/secrets/{SSH_KEY_SECRET}", json={"value": sshd.client_key}
            ).is_success
            body = {
                "source": {"project": "demo"},
                "playbook": "window.yml",
                "targets": [target(sshd)],
                "extra_vars": {
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "seconds": 6,
                    "record": str(record),
                },
                "ssh_key_ref": SSH_KEY_SECRET,
            }
            job_id = client.post("/v1/deployments", json=body).json()["id"]
            wait_for(lambda: Path(f"{record}.start").exists(), timeout=60, message="task runs")
            assert processes_of(job_id), "no Ansible process while the task runs"

            doomed.kill_group()
            doomed.popen.wait(10)
            wait_for(
                lambda: processes_of(job_id) == [],
                timeout=10,
                message="the killed worker's Ansible processes to end",
            )
            assert not Path(f"{record}.end").exists()
            run_root = settings.deploy_run_dir
            assert run_root is not None
            left = {entry.name for entry in run_root.iterdir()}
            assert left, "the killed attempt's private directory should still be there"

            platform.start_worker(queues="deployments", concurrency=1)
            # The new worker sweeps it when it starts (and the next attempt would anyway).
            wait_for(
                lambda: not left & {entry.name for entry in run_root.iterdir()},
                timeout=30,
                message="the dead attempt's private directory to be swept",
            )
            job = wait_terminal(client, job_id, timeout=120)
            assert job["status"] == "succeeded", job
            assert job["attempt"] == 2
            assert [run["attempt"] for run in job["result"]["runs"]] == [2]
            assert Path(f"{record}.end").exists()
            assert processes_of(job_id) == []
            assert list(run_root.iterdir()) == []
            client.close()
    finally:
        sshd.stop()
        flush_redis(settings.redis_url)
        if settings.deploy_run_dir is not None:
            shutil.rmtree(settings.deploy_run_dir.parent, ignore_errors=True)
        shutil.rmtree(sshd.dir, ignore_errors=True)
