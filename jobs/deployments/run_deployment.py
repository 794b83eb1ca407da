"""The ``deployment`` job body: resolve secrets, fetch the source, run the playbook (again,
per the retry policy), and report the per-host recap.

One attempt (a claim of the job) may hold several runs of the playbook: an unreachable host
is retried after a backoff within the attempt, keeping the deployment's slot and target
locks. Each finished run is a unit: its outcome goes to the checkpoint and to a
``deployment_run`` event in one transaction, so an attempt that follows a crash knows how
many runs the retry budget has left. Everything the run prints reaches the job log
redacted (ansible_events.py); everything secret lives in the attempt's private directory
(run_dir.py) and dies with it.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.orm import Session

from core import db
from core.deployments.inventory import build_inventory
from core.deployments.retry_policy import RunOutcome, decide_retry
from core.deployments.spec import DeploymentSpec
from core.errors import JobFailed
from core.lifecycle import job_logs
from core.lifecycle.events import add_event
from core.lifecycle.job_logs import LogLine
from core.logging import mask_in_logs
from core.secrets import vault
from core.secrets.resolve import Resolved, resolve
from jobs.deployments import source
from jobs.deployments.ansible_events import EventRecorder
from jobs.deployments.ansible_process import PlaybookRun, RunResult, kill_survivors, run_playbook
from jobs.deployments.run_dir import private_dir, run_root
from jobs.job_context import JobContext, Progress

log = structlog.get_logger(__name__)

RUN_EVENT = "deployment_run"
RESOURCE_LIMIT = "resource_limit_exceeded"


class Journal:
    """The worker's own lines in the job log (event ``conveyor``), and Ansible's events."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx

    def write(self, lines: list[LogLine]) -> None:
        lease = self.ctx.lease

        def append() -> None:
            with db.transaction(self.ctx.sessions) as session:
                job_logs.append(
                    session,
                    job_id=lease.job_id,
                    owner=lease.owner,
                    attempt=lease.attempt,
                    lines=lines,
                )

        self.ctx.retry_database(append)

    def note(self, line: str, **data: Any) -> None:
        self.write([LogLine(event="conveyor", line=line, data=data)])


def _resolve(ctx: JobContext, spec: DeploymentSpec) -> Resolved:
    cipher = vault.Cipher.from_settings(ctx.settings)

    def read() -> Resolved:
        with db.transaction(ctx.sessions) as session:
            return resolve(session, cipher, spec.refs)

    return ctx.retry_database(read)


def _source_dir(
    ctx: JobContext,
    spec: DeploymentSpec,
    run_dir: Path,
    resolved: Resolved,
    journal: Journal,
    should_stop: Callable[[], bool],
) -> tuple[Path, dict[str, Any]]:
    if spec.source.project is not None:
        path = source.project_dir(ctx.settings.projects_dir, spec.source.project)
        described: dict[str, Any] = {"project": spec.source.project}
    else:
        git = spec.source.git
        assert git is not None
        journal.note(f"fetching {git.url} ({git.ref or 'default branch'})")
        path = run_dir / "source"
        commit = source.clone(
            git,
            dest=path,
            token=resolved.git_token,
            redactor=resolved.redactor,
            should_stop=should_stop,
        )
        ctx.raise_if_stopped()
        described = {"git": git.url, "ref": git.ref, "commit": commit}
    source.check_playbook(path, spec.playbook)
    return path, described


def _outcome(result: RunResult, recorder: EventRecorder) -> RunOutcome:
    if result.status == "successful":
        return RunOutcome.succeeded
    if recorder.failed_hosts:
        return RunOutcome.failed
    if recorder.unreachable_hosts or result.rc == 3:  # ansible-playbook: 3 = unreachable
        return RunOutcome.unreachable
    return RunOutcome.failed if result.rc == 2 else RunOutcome.error


def _resource_failure(result: RunResult, spec: DeploymentSpec) -> JobFailed | None:
    limits = spec.limits
    if result.guard_reason == "memory_limit":
        message = f"Ansible's processes used more than {limits.memory_mb} MB of memory."
    elif result.guard_reason == "cpu_limit" or result.signal == signal.SIGXCPU:
        message = f"Ansible's processes used more than {limits.cpu_seconds} s of CPU."
    else:
        return None
    return JobFailed(message + " The run was stopped.", code=RESOURCE_LIMIT)


def _failure(
    outcome: RunOutcome, result: RunResult, recorder: EventRecorder, runs: int
) -> JobFailed:
    if outcome is RunOutcome.unreachable:
        hosts = ", ".join(sorted(recorder.unreachable_hosts)) or "a target"
        return JobFailed(f"{hosts} unreachable after {runs} run(s).", code="host_unreachable")
    if outcome is RunOutcome.failed:
        hosts = ", ".join(sorted(recorder.failed_hosts)) or "a target"
        return JobFailed(f"A task failed on {hosts}.", code="deployment_failed")
    return JobFailed(
        f"ansible-playbook ended with exit code {result.rc}; the job's logs say why.",
        code="ansible_error",
    )


def _record_run(
    ctx: JobContext, summary: dict[str, Any], history: list[dict[str, Any]]
) -> Callable[[Session], Progress]:
    def unit(session: Session) -> Progress:
        add_event(session, ctx.job_id, RUN_EVENT, ctx.attempt, **summary)
        return Progress(done=len(history), checkpoint={"runs": history})

    return unit


def run_deployment(ctx: JobContext) -> dict[str, Any]:
    spec = DeploymentSpec.model_validate(ctx.params)
    journal = Journal(ctx)
    survivors = kill_survivors(str(ctx.job_id))
    if survivors:
        journal.note(f"ended {survivors} process(es) left by an earlier attempt")
    resolved = _resolve(ctx, spec)
    mask_in_logs(*resolved.values)  # should one ever reach this process's own log lines
    # Cancel, a lost lease and the time limit all raise the job's stop signal (heartbeat).
    should_stop = ctx.stop_event.is_set
    history: list[dict[str, Any]] = list((ctx.checkpoint or {}).get("runs", []))
    root = run_root(ctx.settings.deploy_run_dir)
    with private_dir(root, job_id=ctx.job_id, attempt=ctx.attempt) as run_dir:
        project, described = _source_dir(ctx, spec, run_dir, resolved, journal, should_stop)
        key_file = None
        if resolved.ssh_key is not None:
            key_file = run_dir / "ssh_key"
            key_file.touch(mode=0o600)
            key_file.write_text(resolved.ssh_key)
        playbook = PlaybookRun(
            job_id=str(ctx.job_id),
            number=0,
            run_dir=run_dir,
            project_dir=project,
            playbook=spec.playbook,
            inventory=build_inventory(spec.targets, key_file=str(key_file) if key_file else None),
            variables={**spec.extra_vars, **resolved.variables},
            memory_mb=int(spec.limits.memory_mb or 0),
            cpu_seconds=int(spec.limits.cpu_seconds or 0),
            kill_grace=ctx.settings.deploy_kill_grace_seconds,
        )
        while True:
            number = len(history) + 1
            journal.note(f"run {number} of {spec.retry.max_attempts}: {spec.playbook}")
            recorder = EventRecorder(resolved.redactor, journal.write)
            started = time.monotonic()
            result = run_playbook(
                _numbered(playbook, number), on_event=recorder, should_stop=should_stop
            )
            if result.stopped:
                ctx.raise_if_stopped()
            outcome = _outcome(result, recorder)
            failure = _resource_failure(result, spec)
            decision = decide_retry(
                outcome,
                run=number,
                max_attempts=int(spec.retry.max_attempts or 1),
                backoff_seconds=float(spec.retry.backoff_seconds or 0),
                retry_failed_tasks=spec.retry.retry_failed_tasks,
            )
            retry = failure is None and decision.retry
            summary = {
                "run": number,
                "outcome": RESOURCE_LIMIT if failure else outcome.value,
                "rc": result.rc,
                "seconds": round(time.monotonic() - started, 3),
                "recap": recorder.recap,
                "retry_in": round(decision.delay, 3) if retry else None,
            }
            history.append({**summary, "attempt": ctx.attempt})
            ctx.result = {"source": described, "recap": recorder.recap or {}, "runs": history}
            ctx.commit_unit(_record_run(ctx, summary, history))
            if outcome is RunOutcome.succeeded and failure is None:
                return ctx.result
            if not retry:
                raise failure or _failure(outcome, result, recorder, number)
            journal.note(f"run {number} {outcome.value}; next run in {decision.delay:.1f} s")
            ctx.sleep(decision.delay)


def _numbered(run: PlaybookRun, number: int) -> PlaybookRun:
    return dataclasses.replace(run, number=number)
