"""/v1/jobs: submit, read, list, cancel, retry, events.

Every write commits in ``db.transaction`` *before* anything is published: the job row is the
outbox, so a crash or a dead Redis between commit and publish loses nothing (the relay
publishes it later). The publish itself is handed to the API's dispatcher threads
(api/dispatcher.py): a slow or hung Redis never adds to a submit's latency.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import (
    AppSettings,
    CurrentPrincipal,
    IdempotencyKey,
    JobDispatcher,
    JobId,
    RequestId,
    Sessions,
)
from api.schemas.jobs import (
    MAX_BIGINT,
    JobEventOut,
    JobEventPage,
    JobOut,
    JobPage,
    JobSubmission,
)
from api.schemas.problems import problem_responses
from core import db
from core.broker.publisher import JobMessage
from core.lifecycle import commands, events, queries
from core.lifecycle.states import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=problem_responses(401, 422, 503))


def _location(job_id: uuid.UUID) -> str:
    return f"/v1/jobs/{job_id}"


@router.post(
    "",
    status_code=202,
    summary="Submit a job",
    responses={
        200: {"model": JobOut, "description": "Replay: this Idempotency-Key's earlier job."},
        **problem_responses(409),
    },
)
def submit_job(
    submission: JobSubmission,
    response: Response,
    dispatcher: JobDispatcher,
    sessions: Sessions,
    settings: AppSettings,
    principal: CurrentPrincipal,
    request_id: RequestId,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    params = submission.validated_params()
    limit = commands.time_limit(
        settings, submission.kind, params.get("timeout_seconds"), field="params.timeout_seconds"
    )
    with db.transaction(sessions) as session:
        submitted = commands.submit_job(
            session,
            kind=submission.kind,
            params=params,
            principal_id=principal.id,
            max_attempts=settings.max_attempts,
            time_limit_seconds=limit,
            idempotency_key=idempotency_key,
            request_id=request_id,
        )
        job = JobOut.from_job(submitted.job)
        message = JobMessage.of(submitted.job)
    if submitted.created:
        dispatcher.dispatch(message)
    else:
        response.status_code = 200
    response.headers["Location"] = _location(job.id)
    return job


@router.get("", summary="List jobs, newest first")
def list_jobs(
    sessions: Sessions,
    principal: CurrentPrincipal,
    status: JobStatus | None = None,
    kind: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobPage:
    with db.transaction(sessions) as session:
        jobs, next_cursor = queries.list_jobs(
            session, principal=principal, status=status, kind=kind, limit=limit, cursor=cursor
        )
        return JobPage(items=[JobOut.from_job(job) for job in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", summary="Get a job", responses=problem_responses(404))
def get_job(job_id: JobId, sessions: Sessions, principal: CurrentPrincipal) -> JobOut:
    with db.transaction(sessions) as session:
        return JobOut.from_job(queries.get_job(session, job_id=job_id, principal=principal))


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    summary="Cancel a job",
    description="A queued job is cancelled at once; a running one stops between units.",
    responses=problem_responses(404, 409),
)
def cancel_job(job_id: JobId, sessions: Sessions, principal: CurrentPrincipal) -> JobOut:
    with db.transaction(sessions) as session:
        job = commands.request_cancel(session, job_id=job_id, principal=principal)
        return JobOut.from_job(job)


@router.post(
    "/{job_id}/retry",
    status_code=202,
    summary="Retry a failed or cancelled job",
    responses=problem_responses(404, 409),
)
def retry_job(
    job_id: JobId,
    dispatcher: JobDispatcher,
    sessions: Sessions,
    settings: AppSettings,
    principal: CurrentPrincipal,
    request_id: RequestId,
) -> JobOut:
    with db.transaction(sessions) as session:
        retried = commands.retry_job(
            session, job_id=job_id, principal=principal, attempts_budget=settings.max_attempts
        )
        job = JobOut.from_job(retried)
        message = JobMessage.of(retried)
    dispatcher.dispatch(message)
    return job


@router.get("/{job_id}/events", summary="A job's event log", responses=problem_responses(404))
def list_job_events(
    job_id: JobId,
    sessions: Sessions,
    principal: CurrentPrincipal,
    after: Annotated[
        int, Query(ge=0, le=MAX_BIGINT, description="Only events with a larger id.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> JobEventPage:
    with db.transaction(sessions) as session:
        queries.get_job(session, job_id=job_id, principal=principal)  # visibility check
        page = events.list_events(session, job_id=job_id, after_id=after, limit=limit)
        return JobEventPage(items=[JobEventOut.from_event(event) for event in page])
