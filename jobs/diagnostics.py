"""Diagnostic job kinds for tests and benchmarks: ``noop`` and ``sleep``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session

from core.diagnostics import NoopParams, SleepParams
from core.errors import JobFailed
from jobs.job_context import JobContext, Progress


def _fail_if_asked(ctx: JobContext, params: NoopParams) -> None:
    """The first ``fail_attempts`` attempts fail on purpose, so retry paths can be tested."""
    if ctx.attempt <= params.fail_attempts:
        raise JobFailed(f"failing attempt {ctx.attempt} on purpose", code="induced_failure")


def _report(progress: Progress) -> Callable[[Session], Progress]:
    """A unit with no effects of its own: it only records progress (and checks for cancel)."""
    return lambda _: progress


def run_noop(ctx: JobContext) -> dict[str, Any]:
    # No unit: the whole job is the final status write, the cheapest path through the platform
    # (what the throughput benchmark measures).
    _fail_if_asked(ctx, NoopParams.model_validate(ctx.params))
    return {"ok": True}


def run_sleep(ctx: JobContext) -> dict[str, Any]:
    params = SleepParams.model_validate(ctx.params)
    _fail_if_asked(ctx, params)
    start = int((ctx.checkpoint or {}).get("step", 0))
    ctx.commit_unit(_report(Progress(done=start, total=params.steps)))
    pause = params.seconds / params.steps
    for step in range(start + 1, params.steps + 1):
        if params.uninterruptible:
            _sleep_through_everything(pause)
        else:
            ctx.sleep(pause)  # a step is one unit, however long: the heartbeat keeps the lease
        ctx.commit_unit(_report(Progress(done=step, total=params.steps, checkpoint={"step": step})))
    return {"slept_seconds": params.seconds, "steps": params.steps, "resumed_at_step": start}


def _sleep_through_everything(seconds: float) -> None:
    """Sleep, swallowing Celery's soft time limit: a body that will not stop."""
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0:
        try:
            time.sleep(left)
        except SoftTimeLimitExceeded:
            continue
