"""Helpers for deployment e2e tests: a real sshd (tests/sshd.py) whose client key is stored as
a Conveyor secret, a project directory of tiny playbooks, and one API + deployments worker
shared by a module (Ansible runs dominate the time; starting processes per case would
double it)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from core import db
from core.api_keys import Role
from core.models import JobEvent
from core.settings import Settings
from jobs.deployments.ansible_process import MARKER_ENV
from tests import services
from tests.conftest import settings_env
from tests.e2e.import_support import flush_redis, wait_terminal
from tests.sshd import Sshd

SSH_KEY_SECRET = "test-ssh-key"
PYTHON = {"ansible_python_interpreter": "/usr/bin/python3"}

PLAYBOOKS = {
    # Creates (or leaves alone) a file on the target.
    "touch.yml": """
- hosts: all
  gather_facts: false
  tasks:
    - name: write the marker file
      ansible.builtin.copy:
        dest: "{{ dest }}"
        content: "deployed by {{ inventory_hostname }}\\n"
    - name: say done
      ansible.builtin.debug:
        msg: "wrote {{ dest }}"
""",
    "fail.yml": """
- hosts: all
  gather_facts: false
  tasks:
    - name: this task fails
      ansible.builtin.command: /bin/false
""",
    # Records when it ran on the target (start and end, epoch seconds) in one file per job.
    "window.yml": """
- hosts: all
  gather_facts: false
  tasks:
    - name: hold the target for a while
      ansible.builtin.shell: >
        echo "$(date +%s.%N) {{ seconds }}" > {{ record }}.start &&
        sleep {{ seconds }} &&
        date +%s.%N > {{ record }}.end
""",
    "hog.yml": """
- hosts: all
  gather_facts: false
  tasks:
    - name: build a huge string on the controller
      ansible.builtin.set_fact:
        big: "{{ 'x' * (600 * 1024 * 1024) }}"
""",
}


def deploy_settings(
    database_url: str, redis_server: services.RedisServer, tmp: Path, **overrides: Any
) -> Settings:
    """DB 2 of the session's redis-server: its own queues, apart from other modules'."""
    values: dict[str, Any] = {
        "env": "test",
        "database_url": database_url,
        "redis_url": redis_server.url.rsplit("/", 1)[0] + "/2",
        "storage_dir": tmp / "storage",
        "projects_dir": tmp / "projects",
        # Short: ssh's control sockets live below it (sun_path holds 108 bytes).
        "deploy_run_dir": Path(tempfile.mkdtemp(prefix="cvr-")) / "runs",
        "lease_seconds": 3,
        "reaper_interval": 1,
        "relay_interval": 0.5,
        "breaker_reset_timeout": 2,
        "deploy_max_running": 2,
        "deploy_kill_grace_seconds": 2,
        "waiting_recheck_seconds": 2,
        **overrides,
    }
    return Settings(**values)


def write_project(projects_dir: Path, name: str = "demo") -> Path:
    project = projects_dir / name
    project.mkdir(parents=True, exist_ok=True)
    for file, text in PLAYBOOKS.items():
        (project / file).write_text(text)
    return project


def target(sshd: Sshd, address: str = "127.0.0.1", name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or f"t-{address.replace('.', '-')}",
        "host": address,
        "port": sshd.port,
        "user": sshd.user,
    }


def processes_of(job_id: str) -> list[int]:
    """Processes on this machine started for the job (marker in their environment)."""
    marker = f"{MARKER_ENV}={job_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if marker in environ.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


@dataclass
class DeployPlatform:
    platform: services.Platform
    settings: Settings
    sessions: db.Sessions
    client: httpx.Client
    sshd: Sshd

    def body(self, playbook: str, targets: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        extra = {**PYTHON, **fields.pop("extra_vars", {})}
        return {
            "source": {"project": "demo"},
            "playbook": playbook,
            "targets": targets,
            "extra_vars": extra,
            "ssh_key_ref": SSH_KEY_SECRET,
            **fields,
        }

    def submit(self, body: dict[str, Any]) -> str:
        response = self.client.post("/v1/deployments", json=body)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    def wait(self, job_id: str, timeout: float = 90) -> dict[str, Any]:
        return wait_terminal(self.client, job_id, timeout=timeout)

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.client.get(f"/v1/jobs/{job_id}").json()
        return job

    def logs(self, job_id: str) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.client.get(f"/v1/jobs/{job_id}/logs", params={"after": after})
            assert page.status_code == 200, page.text
            items = page.json()["items"]
            if not items:
                return lines
            lines += items
            after = page.json()["next_after"]

    def events(self, job_id: str, type_: str | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.client.get(f"/v1/jobs/{job_id}/events").json()["items"]
        return [item for item in items if type_ is None or item["type"] == type_]

    def event_rows(self, job_id: str) -> list[JobEvent]:
        with db.transaction(self.sessions) as session:
            return list(session.scalars(sa.select(JobEvent).where(JobEvent.job_id == job_id)))


def wait_for(predicate: Any, *, timeout: float, message: str) -> Any:
    return services.wait_until(predicate, timeout=timeout, interval=0.1, message=message)


def running_deploy_platform(
    settings: Settings,
    engine: sa.Engine,
    log_dir: Path,
    sshd: Sshd,
    *,
    concurrency: int = 3,
) -> Iterator[DeployPlatform]:
    """API + one deployments worker on ``settings`` (each recovers jobs: no beat)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    write_project(settings.projects_dir)
    flush_redis(settings.redis_url)
    sessions = db.make_sessionmaker(engine)
    key = services.new_api_key(sessions, settings, Role.operator)
    with services.platform(settings_env(settings), log_dir) as platform:
        platform.start_api()
        platform.start_worker(queues="deployments", concurrency=concurrency)
        assert platform.api_url is not None
        with httpx.Client(
            base_url=platform.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            stored = client.put(f"/v1/secrets/{SSH_KEY_SECRET}", json={"value": sshd.client_key})
            assert stored.status_code == 200, stored.text
            yield DeployPlatform(platform, settings, sessions, client, sshd)
    flush_redis(settings.redis_url)
    if settings.deploy_run_dir is not None:
        shutil.rmtree(settings.deploy_run_dir.parent, ignore_errors=True)


def seconds_since(start: float) -> float:
    return time.monotonic() - start
