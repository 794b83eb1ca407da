"""/v1/deployments: submit an Ansible deployment. It becomes a job of kind ``deployment``
(same resource, events, logs, cancel, retry and Idempotency-Key as every job).

The stored params are the request with its limits and retry numbers made explicit; secret
references stay names. The job's targets are recorded in the same transaction, for the
per-target lock (core/deployments/limits.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import (
    AppSettings,
    CurrentPrincipal,
    IdempotencyKey,
    JobDispatcher,
    RequestId,
    Sessions,
)
from api.schemas.jobs import JobOut
from api.schemas.problems import problem_responses
from core import db
from core.broker.publisher import JobMessage
from core.deployments import limits
from core.deployments.spec import KIND, DeploymentSpec
from core.lifecycle import commands

router = APIRouter(
    prefix="/v1/deployments", tags=["deployments"], responses=problem_responses(401, 422, 503)
)


@router.post(
    "",
    status_code=202,
    summary="Run an Ansible playbook against target hosts",
    description=(
        "The job waits `queued` (with `waiting_reason`) while the global cap on running "
        "deployments is reached or one of its targets is busy. Follow it at "
        "GET /v1/jobs/{id}/logs/stream."
    ),
    responses={
        200: {"model": JobOut, "description": "Replay: this Idempotency-Key's earlier job."},
        **problem_responses(409),
    },
)
def submit_deployment(
    spec: DeploymentSpec,
    response: Response,
    dispatcher: JobDispatcher,
    sessions: Sessions,
    settings: AppSettings,
    principal: CurrentPrincipal,
    request_id: RequestId,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    effective = spec.with_defaults(settings)
    with db.transaction(sessions) as session:
        submitted = commands.submit_job(
            session,
            kind=KIND,
            params=effective.model_dump(mode="json"),
            principal_id=principal.id,
            max_attempts=settings.max_attempts,
            time_limit_seconds=float(effective.limits.timeout_seconds or 0),
            idempotency_key=idempotency_key,
            request_id=request_id,
        )
        if submitted.created:
            limits.record_targets(session, job_id=submitted.job.id, lock_keys=effective.lock_keys)
        job = JobOut.from_job(submitted.job)
        message = JobMessage.of(submitted.job)
    if submitted.created:
        dispatcher.dispatch(message)
    else:
        response.status_code = 200
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job
