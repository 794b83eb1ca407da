"""Where a deployment's playbook comes from: a server-side project directory, or a git
repository fetched into the run's private directory.

The git token never appears on a command line or in a URL: it travels as an
``http.extraHeader`` through ``GIT_CONFIG_*`` environment variables of the git process only,
with prompts off so a refused clone fails at once instead of waiting for a password.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from core.deployments.spec import GitSource
from core.errors import JobFailed
from core.secrets.redact import Redactor

GIT_POLL_SECONDS = 0.1
GIT_TIMEOUT_SECONDS = 300


def project_dir(projects_dir: Path, name: str) -> Path:
    root = projects_dir.resolve()
    path = (root / name).resolve()
    if path.parent != root or not path.is_dir():
        raise JobFailed(
            f"Project {name!r} does not exist on the worker (CONVEYOR_PROJECTS_DIR).",
            code="project_not_found",
            where={"field": "source.project"},
        )
    return path


def check_playbook(source_dir: Path, playbook: str) -> None:
    path = (source_dir / playbook).resolve()
    if not path.is_relative_to(source_dir.resolve()) or not path.is_file():
        raise JobFailed(
            f"Playbook {playbook!r} is not in the deployment's source.",
            code="playbook_not_found",
            where={"field": "playbook"},
        )


def _git_env(home: Path, token: str | None) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    if token:
        # GitHub and most servers take a token as the password of HTTP basic auth.
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="http.extraHeader",
            GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}",
        )
    return env


def _git(
    args: list[str], *, env: dict[str, str], cwd: Path, should_stop: Callable[[], bool]
) -> tuple[int, str]:
    process = subprocess.Popen(
        ["git", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + GIT_TIMEOUT_SECONDS
    while process.poll() is None:
        if should_stop() or time.monotonic() > deadline:
            process.kill()
        try:
            process.wait(GIT_POLL_SECONDS)
        except subprocess.TimeoutExpired:
            continue
    _, stderr = process.communicate()
    return process.returncode, stderr


def clone(
    git: GitSource,
    *,
    dest: Path,
    token: str | None,
    redactor: Redactor,
    should_stop: Callable[[], bool],
) -> str:
    """Fetch ``git.ref`` (default: the remote's HEAD) into ``dest``; returns the commit id."""
    home = dest.parent / "git-home"
    home.mkdir(mode=0o700, exist_ok=True)
    dest.mkdir(mode=0o700)
    env = _git_env(home, token)
    steps = [
        ["init", "-q"],
        ["fetch", "-q", "--depth", "1", "--no-tags", "--", git.url, git.ref or "HEAD"],
        ["checkout", "-q", "--detach", "FETCH_HEAD"],
    ]
    for step in steps:
        code, stderr = _git(step, env=env, cwd=dest, should_stop=should_stop)
        if should_stop():
            return ""
        if code != 0:
            detail = redactor.text(stderr.strip().splitlines()[-1] if stderr.strip() else "")
            raise JobFailed(
                f"git {step[0]} of {git.url} failed (exit {code}): {detail}".strip(),
                code="git_clone_failed",
                where={"field": "source.git"},
            )
    code, commit = _rev_parse(dest, env)
    return commit if code == 0 else ""


def _rev_parse(dest: Path, env: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=dest, env=env, capture_output=True, text=True
    )
    return done.returncode, done.stdout.strip()
