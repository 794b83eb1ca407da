"""Each deployment attempt's private directory: the SSH key, the variables, the inventory,
the git checkout and whatever ansible-runner writes, in a 0700 directory under
``CONVEYOR_DEPLOY_RUN_DIR`` (memory-backed ``/dev/shm`` by default, so none of it reaches a
disk), deleted when the attempt ends.

A worker killed mid-run cannot delete its directory, so every attempt first sweeps the root:
directories of earlier attempts of the same job, and of worker processes that no longer
exist, are removed; so does every worker when it starts. Names are
``<job id>.<attempt>.<worker pid>``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def run_root(configured: Path | None) -> Path:
    """The configured root when its parent exists (``/dev/shm`` may not), else the system
    temporary directory."""
    if configured is not None and configured.parent.is_dir():
        return configured
    return Path(tempfile.gettempdir()) / "conveyor-runs"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(root: Path, *, job_id: uuid.UUID | None = None) -> list[str]:
    """Remove what crashed attempts left behind (and earlier attempts of ``job_id``);
    returns the names removed. Also run when a worker starts."""
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        parts = entry.name.split(".")
        if len(parts) != 3 or not parts[2].isdigit():
            continue
        if (job_id is not None and parts[0] == str(job_id)) or not _pid_alive(int(parts[2])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    if removed:
        log.warning("deploy.swept_run_dirs", removed=removed)
    return removed


@contextmanager
def private_dir(root: Path, *, job_id: uuid.UUID, attempt: int) -> Iterator[Path]:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    sweep(root, job_id=job_id)
    path = root / f"{job_id}.{attempt}.{os.getpid()}"
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
