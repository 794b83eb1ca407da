"""One ansible-playbook run through ansible-runner, under the guard (process_guard.py).

- ansible-runner's ``binary`` is a small shim that starts the guard, which starts
  ansible-playbook under rlimits, watches the tree's memory and CPU, kills the tree if the
  worker dies (parent-death signal) and leaves nothing behind when the run ends.
- The environment is scrubbed: runner copies the worker's whole environment (database URL,
  secrets key) into the child and into ``artifacts/<id>/command``; here only what Ansible
  needs remains, plus a marker naming the job, by which a later attempt finds survivors.
- Variables (secret ones included) go to Ansible through a 0600 file in the run's private
  directory (never on a command line, where ``ps`` would show them); no output file, no
  event file is written by runner.
- ``should_stop`` (cancel, lost lease, time limit) is runner's cancel callback: the guard
  gets SIGTERM, ansible-playbook SIGTERM, and the whole tree SIGKILL once it exits or after
  the grace period. The callback returns only when the tree is gone.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ansible_runner
import structlog

log = structlog.get_logger(__name__)

MARKER_ENV = "CONVEYOR_DEPLOYMENT_JOB"
# How often runner polls the cancel callback (and so how soon a cancel is seen).
CANCEL_POLL_SECONDS = 0.25
VENV_BIN = Path(sys.executable).parent
# No stdout/stderr artifact files (unredacted output); poll the cancel callback often.
RUNNER_SETTINGS = {"pexpect_timeout": CANCEL_POLL_SECONDS, "suppress_output_file": True}
SOCKET_PATH_MAX = 108
# "/" + Ansible's 10-character hash, and the ".XXXXXXXXXXXXXXXX" ssh appends to the socket it
# creates before renaming it into place, + NUL.
CONTROL_NAME_CHARS = 1 + 10 + 17 + 1


@dataclass(frozen=True)
class PlaybookRun:
    job_id: str
    number: int
    run_dir: Path
    project_dir: Path
    playbook: str
    inventory: dict[str, Any]
    variables: dict[str, Any]
    memory_mb: int
    cpu_seconds: int
    kill_grace: float

    @property
    def work_dir(self) -> Path:
        return self.run_dir / f"run-{self.number}"


@dataclass(frozen=True)
class RunResult:
    status: str  # runner's: successful, failed, canceled, timeout
    rc: int | None
    guard_reason: str | None  # cancelled, memory_limit, cpu_limit, parent_died
    signal: int | None
    stopped: bool


def _write_private(path: Path, content: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(content)


def _shim(run: PlaybookRun, status_file: Path) -> Path:
    guard = [
        sys.executable,
        "-m",
        "jobs.deployments.process_guard",
        "--parent-pid",
        str(os.getpid()),
        "--status-file",
        str(status_file),
        "--memory-mb",
        str(run.memory_mb),
        "--cpu-seconds",
        str(run.cpu_seconds),
        "--grace",
        str(run.kill_grace),
        "--",
        str(VENV_BIN / "ansible-playbook"),
    ]
    path = run.work_dir / "ansible-playbook"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
    with os.fdopen(descriptor, "w") as out:
        out.write(f'#!/bin/sh\nexec {shlex.join(guard)} "$@"\n')
    return path


def _ssh_args(work: Path) -> str:
    args = f"-o UserKnownHostsFile={work / 'known_hosts'} -o ServerAliveInterval=15"
    # One ssh connection per host for the whole run, through a socket in the run's directory;
    # a socket path must fit in sun_path (108 bytes), so a deep run directory goes without.
    if len(str(work / "cp")) + CONTROL_NAME_CHARS < SOCKET_PATH_MAX:
        args += " -o ControlMaster=auto -o ControlPersist=60s"
    return args


def _environment(run: PlaybookRun) -> dict[str, str]:
    work = run.work_dir
    ssh_args = _ssh_args(work)
    return {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work / "home"),
        "LANG": "C.UTF-8",
        "TMPDIR": str(work / "tmp"),
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
        "ANSIBLE_SSH_ARGS": ssh_args,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
        MARKER_ENV: run.job_id,
    }


def _scrubbed(runner_env: dict[str, str], wanted: dict[str, str]) -> dict[str, str]:
    """Runner's environment without anything inherited from the worker's: what runner added
    (its callback plugin, event settings) and what we asked for."""
    inherited = set(os.environ)
    kept = {key: value for key, value in runner_env.items() if key not in inherited}
    return {**kept, **wanted}


def _guard_status(status_file: Path) -> dict[str, Any]:
    try:
        status: dict[str, Any] = json.loads(status_file.read_text())
        return status
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    """Running (not a zombie waiting for pexpect to reap it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return False
    return raw[raw.rfind(b")") + 2 : raw.rfind(b")") + 3] != b"Z"


class _Canceller:
    """runner's cancel_callback: when asked to stop, end the guard's tree, then say so."""

    def __init__(self, should_stop: Callable[[], bool], status_file: Path, grace: float):
        self.should_stop = should_stop
        self.status_file = status_file
        self.grace = grace
        self.stopped = False

    def __call__(self) -> bool:
        if self.stopped:
            return True
        if not self.should_stop():
            return False
        self.stopped = True
        self.end_tree()
        return True

    def end_tree(self) -> None:
        """SIGTERM to the guard (which ends the tree), then wait until it has exited."""
        pid = _guard_status(self.status_file).get("pid")
        if isinstance(pid, int):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.grace + 3
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _alive(pid):  # the guard itself is stuck: the survivor sweep finishes it
                log.warning("deploy.guard_stuck", pid=pid)


def run_playbook(
    run: PlaybookRun,
    *,
    on_event: Callable[[dict[str, Any]], bool],
    should_stop: Callable[[], bool],
) -> RunResult:
    work = run.work_dir
    work.mkdir(mode=0o700)
    for sub in ("home", "tmp", "cp"):
        (work / sub).mkdir(mode=0o700)
    inventory = work / "inventory.json"
    variables = work / "variables.json"
    _write_private(inventory, json.dumps(run.inventory))
    _write_private(variables, json.dumps(run.variables))
    status_file = work / "guard.json"
    # runner 2.4.3 replaces a ``settings=`` argument by the contents of env/settings, or by
    # {} when that file is missing: the settings must be in the file to count.
    (work / "env").mkdir(mode=0o700)
    _write_private(work / "env" / "settings", json.dumps(RUNNER_SETTINGS))
    config = ansible_runner.RunnerConfig(
        private_data_dir=str(work),
        project_dir=str(run.project_dir),
        inventory=str(inventory),
        binary=str(_shim(run, status_file)),
        cmdline=shlex.join(["-e", f"@{variables}", run.playbook]),
        suppress_output_file=True,
        quiet=True,
        ident="ansible",
    )
    config.prepare()
    config.env = _scrubbed(config.env, _environment(run))
    canceller = _Canceller(should_stop, status_file, run.kill_grace)
    runner = ansible_runner.Runner(config=config, event_handler=on_event, cancel_callback=canceller)
    try:
        runner.run()
    finally:
        # An error out of runner (e.g. the event handler found the lease lost) leaves
        # ansible-playbook running under a live worker: end it before going on.
        if _guard_status(status_file).get("running"):
            canceller.end_tree()
    guard = _guard_status(status_file)
    return RunResult(
        status=str(runner.status),
        rc=runner.rc,
        guard_reason=guard.get("reason"),
        signal=guard.get("signal"),
        stopped=canceller.stopped,
    )


def kill_survivors(job_id: str) -> int:
    """SIGKILL every process on this machine left by an earlier attempt of the job (found by
    the marker in its environment): a guard that could not clean up, e.g. killed itself.
    Returns how many."""
    marker = f"{MARKER_ENV}={job_id}".encode()
    killed = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if marker not in environ.read().split(b"\0"):
                    continue
            os.kill(int(entry), signal.SIGKILL)
            killed += 1
        except (OSError, ProcessLookupError):
            continue
    return killed
