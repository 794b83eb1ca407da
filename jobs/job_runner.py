"""The one base Task: claim the job, run its body beside a heartbeat, record the outcome.

Cross-cutting concerns live here and nowhere else: the claim, the heartbeat, the log context,
sorting errors into cancelled / failed / timed out / lost-lease, and the final status write.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
import structlog
from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded

from core import db, tracing
from core.errors import (
    ConveyorError,
    DatabaseUnavailable,
    JobCancelled,
    JobFailed,
    LeaseLost,
    TimeLimitExceeded,
)
from core.lifecycle import lease_statements, leases
from core.lifecycle.admission import Admission
from core.lifecycle.heartbeat import Heartbeat, StopReason
from core.lifecycle.states import JobStatus
from core.logging import bind_job_context
from core.settings import Settings
from jobs.job_context import JobContext, with_database_retry

log = structlog.get_logger(__name__)

JobBody = Callable[[JobContext], dict[str, Any] | None]
Outcome = tuple[JobStatus, dict[str, Any] | None, str | None, str | None]

INTERNAL_ERROR = "internal_error"
INTERNAL_ERROR_MESSAGE = (
    "The job failed because of an internal error; operators can find the details in the "
    "worker's log under this job's id."
)


class JobTask(Task):  # type: ignore[misc]
    """Base class of every job task; the app provides ``sessions`` and ``settings``."""

    def run_job(
        self, job_id: str, body: JobBody, *, queue: str, admission: Admission | None = None
    ) -> None:
        """Run the job ``job_id`` of ``queue`` (the task's route: a claim refuses it while
        that queue is paused)."""
        sessions: db.Sessions = self.app.runtime.sessions
        settings: Settings = self.app.runtime.settings
        try:
            with tracing.tracer.start_as_current_span(
                "job.claim", attributes={"conveyor.job_id": job_id}
            ):
                ctx = with_database_retry(
                    lambda: self._claim(uuid.UUID(job_id), queue, sessions, settings, admission),
                    window=settings.lease_seconds * 4,
                )
        except DatabaseUnavailable:
            # Acking now would lose the message while the row says "dispatched": put it
            # back on the queue instead, for a later delivery to claim.
            log.error("job.claim_database_unavailable", job_id=job_id)
            raise Reject("database unavailable at claim", requeue=True) from None
        if ctx is None:
            return
        log.info("job.started", kind=ctx.kind)
        heartbeat = Heartbeat(
            sessions,
            ctx.lease,
            lease_seconds=settings.lease_seconds,
            time_limit=ctx.time_limit_seconds,
            signal=ctx.stop,
        ).start()
        try:
            outcome = _run_body(ctx, body)
        finally:
            heartbeat.stop()
        if outcome is not None:
            with tracing.tracer.start_as_current_span(
                "job.finish", attributes={"conveyor.status": outcome[0].value}
            ):
                _finish(ctx, outcome, admission, self.app.runtime.statements_engine)

    def _claim(
        self,
        job_id: uuid.UUID,
        queue: str,
        sessions: db.Sessions,
        settings: Settings,
        admission: Admission | None,
    ) -> JobContext | None:
        owner = f"{self.request.hostname or 'worker'}:{os.getpid()}:{self.request.id}"
        claimed = None
        if admission is None:
            # The common case in one statement; anything else (our own claim retried,
            # nothing to claim, admission, a paused queue) takes the complete path below.
            with db.autocommit(self.app.runtime.statements_engine) as connection:
                claimed = lease_statements.claim(
                    connection,
                    job_id=job_id,
                    queue=queue,
                    owner=owner,
                    lease_seconds=settings.lease_seconds,
                    grace=settings.time_limit_grace_seconds,
                )
        if claimed is None:
            claimed = _claim_completely(job_id, queue, owner, sessions, settings, admission)
        if claimed is None:
            log.info("job.not_claimed", job_id=str(job_id))
            return None
        bind_job_context(
            job_id=str(job_id),
            request_id=claimed.request_id,
            trace_id=claimed.trace_id,
            attempt=claimed.lease.attempt,
        )
        return JobContext(
            job_id=job_id,
            kind=claimed.kind,
            params=claimed.params,
            attempt=claimed.lease.attempt,
            checkpoint=claimed.checkpoint,
            lease=claimed.lease,
            sessions=sessions,
            settings=settings,
            unit_seq=claimed.unit_seq,
            time_limit_seconds=claimed.time_limit_seconds,
            result=claimed.result,
        )


def _claim_completely(
    job_id: uuid.UUID,
    queue: str,
    owner: str,
    sessions: db.Sessions,
    settings: Settings,
    admission: Admission | None,
) -> lease_statements.Claimed | None:
    """The complete claim (core.lifecycle.leases), for what the one statement leaves out."""
    with db.transaction(sessions) as session:
        lease = leases.claim_job(
            session,
            job_id=job_id,
            queue=queue,
            owner=owner,
            lease_seconds=settings.lease_seconds,
            grace=settings.time_limit_grace_seconds,
            admission=admission,
        )
        if lease is None:
            return None
        return lease_statements.Claimed.of(leases.load_claimed(session, lease=lease), lease)


def _run_body(ctx: JobContext, body: JobBody) -> Outcome | None:
    """Run the body and sort what happened; None means this attempt must not write."""
    try:
        result = body(ctx)
    except Exception as error:
        return _outcome_of(ctx, error)
    if ctx.stop_reason is StopReason.lease_lost:
        return None
    return JobStatus.succeeded, result, None, None


def _outcome_of(ctx: JobContext, error: Exception) -> Outcome | None:
    if ctx.stop_reason is StopReason.lease_lost or isinstance(error, LeaseLost):
        log.warning("job.lease_lost")
        return None
    if isinstance(error, SoftTimeLimitExceeded):
        # Celery's soft limit (prefork pools) fired inside the body; same as ours.
        error = TimeLimitExceeded()
    elif not isinstance(error, ConveyorError) and ctx.stop.error() is not None:
        # Being stopped (a killed process, an interrupted call) made the body fail: why it
        # was stopped is the outcome, not the error it stopped with.
        error = ctx.stop.error() or error
    if isinstance(error, JobCancelled):
        return JobStatus.cancelled, ctx.result, None, None
    if isinstance(error, DatabaseUnavailable):
        # Nothing can be written; the lease expires and the reaper re-dispatches the job.
        log.error("job.database_unavailable")
        return None
    if isinstance(error, ConveyorError):
        return _failed(ctx, error)
    # The traceback and the exception's text (driver messages, paths...) go to the log with
    # the job id; the caller gets a code and a sentence.
    log.error("job.crashed", exc_info=error)
    return JobStatus.failed, ctx.result, INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE


def _failed(ctx: JobContext, error: ConveyorError) -> Outcome:
    if not isinstance(error, JobFailed):
        return JobStatus.failed, ctx.result, error.code, error.message
    log.info("job.failed", code=error.code, message=error.message, where=error.where)
    result = (
        ctx.result if error.where is None else {**(ctx.result or {}), "error_where": error.where}
    )
    return JobStatus.failed, result, error.code, error.message


def _finish(
    ctx: JobContext, outcome: Outcome, admission: Admission | None, engine: sa.Engine
) -> None:
    status, result, code, message = outcome

    def finish() -> None:
        if admission is None:  # one statement, no ORM
            with db.autocommit(engine) as connection:
                lease_statements.finish(
                    connection,
                    lease=ctx.lease,
                    status=status,
                    result=result,
                    error_code=code,
                    error_message=message,
                )
            return
        with db.transaction(ctx.sessions) as session:
            leases.finish_job(
                session,
                lease=ctx.lease,
                status=status,
                result=result,
                error_code=code,
                error_message=message,
            )
            # What this job held (a slot, a target) is free now, in the same transaction.
            admission.released(session, ctx.job_id)

    try:
        # Past the retry window DatabaseUnavailable propagates; the reaper takes over.
        ctx.retry_database(finish)
    except LeaseLost:
        log.warning("job.lease_lost_at_finish")
        return
    log.info("job.finished", status=status.value, error_code=code)
