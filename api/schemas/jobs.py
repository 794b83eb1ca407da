"""Shapes of /v1/jobs: submissions with per-kind params, and the job as clients see it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.schemas.problems import FieldError
from core.diagnostics import PARAMS_MODELS
from core.lifecycle.async_store import JobRecord
from core.lifecycle.states import JobStatus
from core.models import Job, JobEvent

# Integers that reach PostgreSQL must fit a bigint: past it, a 422 rather than a driver error.
MAX_BIGINT = 2**63 - 1


# The kinds of core.broker.task_names.GENERIC_KINDS, each with the model of its params.
JobKind = Literal["noop", "sleep"]


class JobSubmission(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"kind": "sleep", "params": {"seconds": 5, "steps": 5}}]},
    )

    kind: JobKind
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Per kind: noop → NoopParams, sleep → SleepParams.",
    )

    def validated_params(self) -> dict[str, Any]:
        """The params checked against the kind's model, defaults filled in.

        Validated here rather than with a discriminated union so that error locations read
        ``body.params.seconds`` (a union would insert the tag: ``body.sleep.params.seconds``).
        """
        try:
            params = PARAMS_MODELS[self.kind].model_validate(self.params)
        except ValidationError as error:
            raise RequestValidationError(
                [{**item, "loc": ("body", "params", *item["loc"])} for item in error.errors()]
            ) from error
        return params.model_dump()


class JobProgress(BaseModel):
    total: int | None
    done: int
    failed: int
    percent: float


class JobError(BaseModel):
    code: str
    message: str


class JobOut(BaseModel):
    id: uuid.UUID
    kind: str
    status: JobStatus
    progress: JobProgress
    attempt: int
    cancel_requested: bool
    waiting_reason: str | None = Field(
        description="Why a queued job is held back (a limit, a paused queue; for deployments "
        "concurrency_limit or target_busy: the job's `waiting` event names what it waits for); "
        "null otherwise."
    )
    time_limit_seconds: float = Field(description="Run-time limit of one attempt.")
    trace_id: str | None = Field(
        description="The job's trace (OpenTelemetry when enabled); in every log line about it."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: JobError | None
    result: dict[str, Any] | None
    params: dict[str, Any]
    schedule_id: uuid.UUID | None = Field(
        default=None, description="The schedule whose firing made this job, if any."
    )
    fire_time: datetime | None = Field(default=None, description="That firing's fire time.")

    @classmethod
    def from_job(cls, job: Job | JobRecord) -> JobOut:
        # model_construct: the values come from the database row (typed by its columns), so
        # validating them again would only cost time on every answer.
        status = JobStatus(job.status)
        return cls.model_construct(
            id=job.id,
            kind=job.kind,
            status=status,
            progress=JobProgress.model_construct(
                total=job.progress_total,
                done=job.progress_done,
                failed=job.progress_failed,
                percent=_percent(status, done=job.progress_done, total=job.progress_total),
            ),
            attempt=job.attempt,
            cancel_requested=job.cancel_requested,
            waiting_reason=job.waiting_reason,
            time_limit_seconds=job.time_limit_seconds,
            trace_id=job.trace_id,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            error=(
                JobError.model_construct(code=job.error_code, message=job.error_message or "")
                if job.error_code
                else None
            ),
            result=job.result,
            params=job.params,
            schedule_id=job.schedule_id,
            fire_time=job.fire_time,
        )


def _percent(status: JobStatus, *, done: int, total: int | None) -> float:
    """Share of units done; without a known total only success means 100."""
    if total:
        return min(100.0, round(100 * done / total, 1))
    return 100.0 if status is JobStatus.succeeded else 0.0


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at end.")


class JobEventOut(BaseModel):
    id: int
    at: datetime
    type: str
    attempt: int
    data: dict[str, Any]

    @classmethod
    def from_event(cls, event: JobEvent) -> JobEventOut:
        return cls(
            id=event.id, at=event.at, type=event.type, attempt=event.attempt, data=event.data
        )


class JobEventPage(BaseModel):
    items: list[JobEventOut]


# Submissions per POST /v1/jobs/batch: one transaction and one pipelined publish each.
MAX_BATCH = 1000


class BatchJob(JobSubmission):
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=r"^[^\x00]+$",  # PostgreSQL text cannot hold NUL
        description="Like the Idempotency-Key header, for this submission alone.",
    )


class JobBatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"jobs": [{"kind": "noop"}, {"kind": "sleep", "params": {"seconds": 1}}]}]
        },
    )

    # Entries are checked one by one (a bad entry is a problem in its own slot of the
    # answer, not a 422 for the whole batch), so they are read as plain JSON here.
    jobs: list[Any] = Field(
        description=f"Up to {MAX_BATCH} submissions, each {{kind, params, idempotency_key?}}."
    )


class EntryProblem(BaseModel):
    status: int
    code: str
    message: str
    where: dict[str, Any] | None = None
    errors: list[FieldError] | None = None


class BatchItem(BaseModel):
    status: int = Field(description="202 created, 200 replayed (Idempotency-Key), else 4xx.")
    job: JobOut | None
    problem: EntryProblem | None


class BatchResult(BaseModel):
    items: list[BatchItem] = Field(description="One per submission, in the request's order.")
    created: int
    replayed: int
    failed: int
