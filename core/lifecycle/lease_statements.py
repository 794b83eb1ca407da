"""A worker's claim and finish as one SQL statement each (Core text, no ORM), run in
autocommit: the job's transition and its event in one round trip.

They cover the common case only; ``core.lifecycle.leases`` keeps the complete logic (a claim
retried by the same owner, a delivery that cannot claim but settles a cancelled or
exhausted job, admission for deployments, paused queues) and the runner falls back to it
when the one statement does not apply. The semantics of the UPDATEs are the same as there.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from core.errors import LeaseLost
from core.lifecycle.leases import Lease
from core.lifecycle.states import TERMINAL, JobStatus
from core.models import Job

# synchronous_commit is switched off for the claim's own transaction only (set_config(...,
# true) lasts until its end): if PostgreSQL crashes before the WAL reaches disk the claim is
# lost, the job is queued again, and the attempt that ran meanwhile could not have written
# anything (every unit and the finish are fenced by this lease, and a durable commit of a
# unit flushes the claim before it). The lost-message check republishes the job. It saves
# a disk flush per job on the worker's critical path.
_CLAIM = sa.text(
    """
    WITH claimed AS (
        UPDATE jobs SET
            status = 'running',
            attempt = attempt + 1,
            lease_owner = :owner,
            run_deadline_at = now() + make_interval(secs => time_limit_seconds + :grace),
            lease_expires_at = least(
                now() + make_interval(secs => :lease_seconds),
                now() + make_interval(secs => time_limit_seconds + :grace)
            ),
            waiting_reason = NULL,
            started_at = coalesce(started_at, now()),
            dispatched_at = coalesce(dispatched_at, now()),
            updated_at = now()
        WHERE id = :job_id
          AND (status = 'queued' OR (status = 'running' AND lease_expires_at < now()))
          AND NOT cancel_requested
          AND attempt < max_attempts
          -- a claim from a paused queue takes the complete path, which refuses it
          -- (core.queues.control); other queues' claims are not slowed by the pause
          AND NOT EXISTS (SELECT 1 FROM queues WHERE name = :queue AND paused)
        RETURNING id, kind, params, attempt, checkpoint, unit_seq, time_limit_seconds, result,
            request_id, trace_id
    ),
    event AS (
        INSERT INTO job_events (job_id, type, attempt, data)
        SELECT id, 'status', attempt,
            jsonb_build_object('status', 'running', 'worker', CAST(:owner AS text))
        FROM claimed
    ),
    flush_later AS (SELECT set_config('synchronous_commit', 'off', true) AS setting)
    SELECT claimed.* FROM claimed, flush_later
    """
)


@dataclass(frozen=True)
class Claimed:
    """A claimed job: its lease and what the runner needs to run it."""

    lease: Lease
    kind: str
    params: dict[str, Any]
    checkpoint: dict[str, Any] | None
    unit_seq: int
    time_limit_seconds: float
    result: dict[str, Any] | None
    request_id: str | None
    trace_id: str | None

    @classmethod
    def of(cls, job: Job, lease: Lease) -> Claimed:
        """What the complete claim (``leases.claim_job``) took, in the same shape."""
        return cls(
            lease=lease,
            kind=job.kind,
            params=dict(job.params),
            checkpoint=job.checkpoint,
            unit_seq=job.unit_seq,
            time_limit_seconds=job.time_limit_seconds,
            result=job.result,
            request_id=job.request_id,
            trace_id=job.trace_id,
        )


def claim(
    connection: sa.Connection,
    *,
    job_id: uuid.UUID,
    queue: str,
    owner: str,
    lease_seconds: float,
    grace: float,
) -> Claimed | None:
    """Queued (or running with an expired lease) -> running for ``owner``; None when this
    statement does not apply (then ``leases.claim_job`` decides). ``queue`` is the job's
    (its kind's route), which the task delivering it knows."""
    row = (
        connection.execute(
            _CLAIM,
            {
                "job_id": job_id,
                "queue": queue,
                "owner": owner,
                "lease_seconds": lease_seconds,
                "grace": grace,
            },
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    return Claimed(
        lease=Lease(job_id=row["id"], owner=owner, attempt=row["attempt"]),
        kind=row["kind"],
        params=dict(row["params"]),
        checkpoint=row["checkpoint"],
        unit_seq=row["unit_seq"],
        time_limit_seconds=row["time_limit_seconds"],
        result=row["result"],
        request_id=row["request_id"],
        trace_id=row["trace_id"],
    )


_FINISH = sa.text(
    """
    WITH finished AS (
        UPDATE jobs SET
            status = :status,
            result = CAST(:result AS jsonb),
            error_code = :error_code,
            error_message = :error_message,
            finished_at = now(),
            updated_at = now(),
            lease_owner = NULL,
            lease_expires_at = NULL,
            run_deadline_at = NULL
        WHERE id = :job_id AND status = 'running' AND lease_owner = :owner AND attempt = :attempt
        RETURNING id, attempt
    ),
    event AS (
        INSERT INTO job_events (job_id, type, attempt, data)
        SELECT id, 'status', attempt, CAST(:event AS jsonb) FROM finished
    )
    SELECT id FROM finished
    """
)


def finish(
    connection: sa.Connection,
    *,
    lease: Lease,
    status: JobStatus,
    result: dict[str, Any] | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> None:
    """Like ``leases.finish_job`` (fenced by the lease, LeaseLost if not ours), in one
    statement."""
    if status not in TERMINAL:
        raise ValueError(f"{status} is not terminal")
    details = {"code": error_code, "message": error_message} if error_code else {}
    finished = connection.execute(
        _FINISH,
        {
            "job_id": lease.job_id,
            "owner": lease.owner,
            "attempt": lease.attempt,
            "status": status.value,
            "result": json.dumps(result) if result is not None else None,
            "error_code": error_code,
            "error_message": error_message,
            "event": json.dumps({"status": status.value, **details}),
        },
    ).first()
    if finished is None:
        raise LeaseLost()
