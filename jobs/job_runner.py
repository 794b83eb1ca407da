"""The one base Task: claim the job, run its body unit by unit, record the outcome.

Cross-cutting concerns live here and nowhere else: the claim, the log context, sorting errors
into cancelled / failed / lost-lease, and the final status write.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from celery import Task
from celery.exceptions import Reject

from core import db
from core.errors import ConveyorError, DatabaseUnavailable, JobCancelled, JobFailed, LeaseLost
from core.lifecycle import commands
from core.lifecycle.admission import Admission
from core.lifecycle.heartbeat import Heartbeat
from core.lifecycle.states import JobStatus
from core.logging import bind_job_context
from core.settings import Settings
from jobs.job_context import JobContext, with_database_retry

log = structlog.get_logger(__name__)

JobBody = Callable[[JobContext], dict[str, Any] | None]


class JobTask(Task):  # type: ignore[misc]
    """Base class of every job task; the app provides ``sessions`` and ``settings``."""

    def run_job(self, job_id: str, body: JobBody, admission: Admission | None = None) -> None:
        sessions: db.Sessions = self.app.runtime.sessions
        settings: Settings = self.app.conf.conveyor_settings
        try:
            ctx = with_database_retry(
                lambda: self._claim(uuid.UUID(job_id), sessions, settings, admission),
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
            sessions, ctx.lease, lease_seconds=settings.lease_seconds, signal=ctx.stop
        ).start()
        try:
            outcome = _run_body(ctx, body)
        finally:
            heartbeat.stop()
        if outcome is None:
            return
        status, result, code, message = outcome

        def finish() -> None:
            with db.transaction(sessions) as session:
                commands.finish_job(
                    session,
                    lease=ctx.lease,
                    status=status,
                    result=result,
                    error_code=code,
                    error_message=message,
                )
                if admission is not None:
                    admission.released(session, ctx.job_id)

        try:
            # Past the retry window DatabaseUnavailable propagates; the reaper takes over.
            ctx.retry_database(finish)
        except LeaseLost:
            log.warning("job.lease_lost_at_finish")
            return
        log.info("job.finished", status=status.value, error_code=code)

    def _claim(
        self,
        job_id: uuid.UUID,
        sessions: db.Sessions,
        settings: Settings,
        admission: Admission | None,
    ) -> JobContext | None:
        owner = f"{self.request.hostname or 'worker'}:{os.getpid()}:{self.request.id}"
        with db.transaction(sessions) as session:
            lease = commands.claim_job(
                session,
                job_id=job_id,
                owner=owner,
                lease_seconds=settings.lease_seconds,
                admission=admission,
            )
            if lease is None:
                log.info("job.not_claimed", job_id=str(job_id))
                return None
            job = commands.load_claimed(session, lease=lease)
            bind_job_context(job_id=str(job_id), request_id=job.request_id, attempt=lease.attempt)
            return JobContext(
                job_id=job_id,
                kind=job.kind,
                params=dict(job.params),
                attempt=lease.attempt,
                checkpoint=job.checkpoint,
                lease=lease,
                sessions=sessions,
                settings=settings,
                result=job.result,
            )


Outcome = tuple[JobStatus, dict[str, Any] | None, str | None, str | None]


def _run_body(ctx: JobContext, body: JobBody) -> Outcome | None:
    """Run the body and sort what happened; None means this attempt must not write."""
    try:
        try:
            result = body(ctx)
        except Exception as error:
            stopped = ctx.stop.error()
            if stopped is not None and not isinstance(error, ConveyorError):
                raise stopped from error
            raise
    except JobCancelled:
        return JobStatus.cancelled, ctx.result, None, None
    except LeaseLost:
        log.warning("job.lease_lost")
        return None
    except DatabaseUnavailable:
        # Nothing can be written; the lease expires and the reaper re-dispatches the job.
        log.error("job.database_unavailable")
        return None
    except JobFailed as error:
        log.info("job.failed", code=error.code, message=error.message, where=error.where)
        return JobStatus.failed, _with_where(ctx.result, error), error.code, error.message
    except ConveyorError as error:
        return JobStatus.failed, ctx.result, error.code, error.message
    except Exception as error:
        log.exception("job.crashed")
        return JobStatus.failed, ctx.result, "internal_error", f"{type(error).__name__}: {error}"
    return JobStatus.succeeded, result, None, None


def _with_where(result: dict[str, Any] | None, error: ConveyorError) -> dict[str, Any] | None:
    if error.where is None:
        return result
    return {**(result or {}), "error_where": error.where}
