"""/v1/jobs: submit (one or a batch), read, list, cancel, retry, events.

The hot routes (submit, batch, get, list, cancel) are ``async``: one pooled psycopg
connection, hand-written SQL with the API key checked inside the same statement
(core.lifecycle.async_store), no threadpool hop. Retry and events keep the sync ORM path.

Every write commits *before* anything is published: the job row is the outbox, so a crash
or a dead Redis between commit and publish loses nothing (the relay publishes it later).
The publish itself is queued to the API's dispatcher (api/dispatcher.py), a task on the
event loop that pipelines waiting jobs to Redis: a slow or hung Redis never adds to a
submit's latency.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from api.deps import (
    ApiKeyCheck,
    AppSettings,
    CurrentPrincipal,
    IdempotencyKey,
    JobDispatcher,
    JobId,
    RequestId,
    Sessions,
)
from api.error_handlers import http_status_for, validation_problem
from api.schemas.jobs import (
    MAX_BATCH,
    MAX_BIGINT,
    BatchItem,
    BatchJob,
    BatchResult,
    EntryProblem,
    JobBatch,
    JobEventOut,
    JobEventPage,
    JobOut,
    JobPage,
    JobSubmission,
)
from api.schemas.problems import problem_responses
from core import db
from core.broker.publisher import JobMessage
from core.errors import ConveyorError, InvalidRequest
from core.lifecycle import async_store, commands, events, queries
from core.lifecycle.states import JobStatus
from core.settings import Settings

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=problem_responses(401, 422, 503))


def _location(job_id: uuid.UUID) -> str:
    return f"/v1/jobs/{job_id}"


def _json(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The model serialized once, by pydantic, into the response. Returning the model would
    have FastAPI validate it again against the response model before serializing it (a
    measurable share of a GET's CPU); the routes declare ``response_model`` for the docs."""
    return Response(
        model.__pydantic_serializer__.to_json(model),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def _new_job(
    settings: Settings, submission: JobSubmission, idempotency_key: str | None, *, field: str
) -> async_store.NewJob:
    params = submission.validated_params()
    limit = commands.time_limit(
        settings, submission.kind, params.get("timeout_seconds"), field=field
    )
    return async_store.NewJob(submission.kind, params, limit, idempotency_key)


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    summary="Submit a job",
    responses={
        200: {"model": JobOut, "description": "Replay: this Idempotency-Key's earlier job."},
        **problem_responses(409),
    },
)
async def submit_job(
    submission: JobSubmission,
    dispatcher: JobDispatcher,
    settings: AppSettings,
    auth: ApiKeyCheck,
    request_id: RequestId,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    new = _new_job(settings, submission, idempotency_key, field="params.timeout_seconds")
    async with auth.connection() as conn:
        (outcome,) = await async_store.submit_jobs(
            conn,
            key_hash=auth.key_hash,
            jobs=[new],
            max_attempts=settings.max_attempts,
            request_id=request_id,
        )
    if outcome.problem is not None:
        raise outcome.problem
    assert outcome.job is not None
    if outcome.created:  # a job of a paused queue is held, not published (JobMessage.held)
        dispatcher.dispatch(JobMessage.of(outcome.job))
    return _json(
        JobOut.from_job(outcome.job),
        status_code=202 if outcome.created else 200,
        headers={"Location": _location(outcome.job.id)},
    )


def _entry_problem(error: Exception, index: int) -> EntryProblem:
    """A refused entry's problem, with fields located in the batch (``jobs.3.params.x``)."""
    if isinstance(error, ConveyorError):
        return EntryProblem(
            status=http_status_for(error), code=error.code, message=error.message, where=error.where
        )
    assert isinstance(error, ValidationError | RequestValidationError)
    problem = validation_problem(error.errors(), under=("jobs", index))
    return EntryProblem(
        status=422,
        code=InvalidRequest.code,
        message=problem.message,
        where=problem.where,
        errors=problem.errors,
    )


def _read_entry(settings: Settings, raw: Any, index: int) -> async_store.NewJob:
    entry = BatchJob.model_validate(raw)
    return _new_job(
        settings, entry, entry.idempotency_key, field=f"jobs.{index}.params.timeout_seconds"
    )


@router.post(
    "/batch",
    summary="Submit up to 1,000 jobs at once",
    description=(
        "One transaction for the rows, one pipelined publish to Redis. The answer has one "
        "item per submission, in order: the job (202 created, 200 replayed by its "
        "idempotency_key) or the problem that refused it; valid entries are created even "
        "when others are refused."
    ),
    response_model=BatchResult,
    responses=problem_responses(413),
)
async def submit_batch(
    batch: JobBatch,
    dispatcher: JobDispatcher,
    settings: AppSettings,
    auth: ApiKeyCheck,
    request_id: RequestId,
) -> Response:
    if len(batch.jobs) > MAX_BATCH:
        raise InvalidRequest(
            f"A batch holds at most {MAX_BATCH} jobs; this one has {len(batch.jobs)}. Split it.",
            where={"field": "jobs"},
        )
    items: list[BatchItem | None] = []
    valid: list[tuple[int, async_store.NewJob]] = []
    for index, raw in enumerate(batch.jobs):
        try:
            valid.append((index, _read_entry(settings, raw, index)))
            items.append(None)
        except (ValidationError, RequestValidationError, ConveyorError) as error:
            items.append(_refused(_entry_problem(error, index)))
    async with auth.connection() as conn:
        outcomes = await async_store.submit_jobs(
            conn,
            key_hash=auth.key_hash,
            jobs=[new for _, new in valid],
            max_attempts=settings.max_attempts,
            request_id=request_id,
        )
    dispatcher.dispatch_many(JobMessage.of(o.job) for o in outcomes if o.created and o.job)
    for (index, _), outcome in zip(valid, outcomes, strict=True):
        items[index] = _batch_item(outcome, index)
    final = [item for item in items if item is not None]
    return _json(
        BatchResult(
            items=final,
            created=sum(o.created for o in outcomes),
            replayed=sum(1 for item in final if item.status == 200),
            failed=sum(1 for item in final if item.problem is not None),
        )
    )


def _refused(problem: EntryProblem) -> BatchItem:
    return BatchItem(status=problem.status, job=None, problem=problem)


def _batch_item(outcome: async_store.SubmitOutcome, index: int) -> BatchItem:
    if outcome.problem is not None:
        return _refused(_entry_problem(outcome.problem, index))
    assert outcome.job is not None
    return BatchItem(
        status=202 if outcome.created else 200, job=JobOut.from_job(outcome.job), problem=None
    )


@router.get("", response_model=JobPage, summary="List jobs, newest first")
async def list_jobs(
    auth: ApiKeyCheck,
    status: JobStatus | None = None,
    kind: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    async with auth.connection() as conn:
        jobs, next_cursor = await async_store.list_jobs(
            conn, key_hash=auth.key_hash, status=status, kind=kind, limit=limit, cursor=cursor
        )
    return _json(JobPage(items=[JobOut.from_job(job) for job in jobs], next_cursor=next_cursor))


@router.get(
    "/{job_id}", response_model=JobOut, summary="Get a job", responses=problem_responses(404)
)
async def get_job(job_id: JobId, auth: ApiKeyCheck) -> Response:
    async with auth.connection() as conn:
        job = await async_store.get_job(conn, key_hash=auth.key_hash, job_id=job_id)
    return _json(JobOut.from_job(job))


@router.post(
    "/{job_id}/cancel",
    status_code=202,
    response_model=JobOut,
    summary="Cancel a job",
    description="A queued job is cancelled at once; a running one stops between units.",
    responses=problem_responses(404, 409),
)
async def cancel_job(job_id: JobId, auth: ApiKeyCheck) -> Response:
    async with auth.connection() as conn:
        job = await async_store.cancel_job(conn, key_hash=auth.key_hash, job_id=job_id)
    return _json(JobOut.from_job(job), status_code=202)


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
