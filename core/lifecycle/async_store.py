"""The API's hot path in SQL: submit (one or a batch), get, list, cancel, on an async
connection (core.async_db), with the API key checked *inside* the statement that does the
work.

Each statement starts with ``WITH k AS (SELECT … FROM api_keys WHERE key_hash = … AND
revoked_at IS NULL)`` and returns at least one row when the key is valid: no row means 401.
A revoked key is refused by the very next request in every API process (there is no cache
to invalidate), and authentication costs no extra transaction. Semantics match the ORM
versions in core.lifecycle.commands / queries (the sync paths that CLI and tests use).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from core import tracing
from core.async_db import AsyncConnection, execute
from core.broker.task_names import route_for
from core.errors import (
    ConveyorError,
    IdempotencyConflict,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    Unauthenticated,
)
from core.lifecycle.idempotency import request_fingerprint
from core.lifecycle.queries import decode_cursor, encode_cursor
from core.lifecycle.states import TERMINAL, JobStatus
from core.queues.control import QUEUE_PAUSED


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as the API shows and publishes it (the columns of ``_COLUMNS``)."""

    id: uuid.UUID
    kind: str
    status: str
    params: dict[str, Any]
    attempt: int
    cancel_requested: bool
    waiting_reason: str | None
    time_limit_seconds: float
    trace_id: str | None
    traceparent: str | None
    request_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error_code: str | None
    error_message: str | None
    result: dict[str, Any] | None
    progress_total: int | None
    progress_done: int
    progress_failed: int
    schedule_id: uuid.UUID | None  # set on jobs a schedule's firing made (core.schedules)
    fire_time: datetime | None


_NAMES = tuple(field.name for field in fields(JobRecord))
_COLUMNS = ", ".join(f"j.{name}" for name in _NAMES)
_KEY = """k AS (SELECT id AS key_id, role AS key_role
    FROM api_keys WHERE key_hash = %(key_hash)s AND revoked_at IS NULL)"""
# The key's principal may see the job: operators and admins see all, submitters their own.
_VISIBLE = "(k.key_role <> 'submitter' OR j.principal_id = k.key_id)"


def _record(row: dict[str, Any]) -> JobRecord | None:
    if row["id"] is None:
        return None
    return JobRecord(*(row[name] for name in _NAMES))


def _key_id(rows: list[dict[str, Any]]) -> uuid.UUID:
    """The caller's key: every statement returns a row while the key is valid, none else."""
    if not rows:
        raise Unauthenticated("Unknown or revoked API key.")
    key_id: uuid.UUID = rows[0]["key_id"]
    return key_id


@dataclass(frozen=True)
class NewJob:
    """One submission, validated by the caller (kind, params with defaults, time limit)."""

    kind: str
    params: dict[str, Any]
    time_limit_seconds: float
    idempotency_key: str | None = None


@dataclass(frozen=True)
class SubmitOutcome:
    """Per submission: the job (``created`` False for an Idempotency-Key replay) or the
    problem that refused it."""

    job: JobRecord | None = None
    created: bool = False
    problem: ConveyorError | None = None


_INSERT = f"""
WITH {_KEY},
ins AS (
    INSERT INTO jobs AS j (id, kind, params, principal_id, idempotency_key, request_fingerprint,
        request_id, trace_id, traceparent, max_attempts, time_limit_seconds, status,
        waiting_reason)
    SELECT u.id, u.kind, u.params, k.key_id, u.idem, u.fp, %(request_id)s::text, u.tid, u.tp,
        %(max_attempts)s::int, u.tl, 'queued',
        -- a paused queue's job waits from the start (core.queues.control)
        (SELECT '{QUEUE_PAUSED}' FROM queues q WHERE q.paused AND q.name = u.queue)
    FROM k, ROWS FROM (jsonb_to_recordset(%(jobs)s::jsonb) AS (id uuid, kind text,
        params jsonb, idem text, fp text, tid text, tp text, tl float8, queue text))
        WITH ORDINALITY AS u(id, kind, params, idem, fp, tid, tp, tl, queue, ord)
    ORDER BY u.ord  -- the batch's order, for created_at ties (list order)
    ON CONFLICT (principal_id, idempotency_key) DO NOTHING
    RETURNING j.id, j.created_at, j.waiting_reason
),
ev AS (
    INSERT INTO job_events (job_id, type, attempt, data)
    SELECT id, 'status', 0, '{{"status": "queued"}}'::jsonb FROM ins
)
SELECT k.*, ins.* FROM k LEFT JOIN ins ON true
"""

_EXISTING = f"""
SELECT {_COLUMNS}, j.idempotency_key, j.request_fingerprint FROM jobs j
WHERE j.principal_id = %(principal_id)s AND j.idempotency_key = ANY(%(keys)s::text[])
"""


async def submit_jobs(
    conn: AsyncConnection,
    *,
    key_hash: str,
    jobs: list[NewJob],
    max_attempts: int,
    request_id: str | None,
) -> list[SubmitOutcome]:
    """Insert the jobs (queued, undispatched) and their first events in one statement,
    authenticated by ``key_hash``; one outcome per submission, in order."""
    fingerprints = [request_fingerprint({"kind": j.kind, "params": j.params}) for j in jobs]
    traces = [tracing.new_job_trace() for _ in jobs]
    ids = [uuid.uuid4() for _ in jobs]
    cursor = await execute(
        conn,
        "INSERT jobs",
        _INSERT,
        {
            "key_hash": key_hash,
            "request_id": request_id,
            "max_attempts": max_attempts,
            # One parameter for the whole batch: psycopg dumps one string, not nine arrays.
            "jobs": json.dumps(
                [
                    {
                        "id": str(job_id),
                        "kind": j.kind,
                        "params": j.params,
                        "idem": j.idempotency_key,
                        "fp": fingerprint,
                        "tid": trace[0],
                        "tp": trace[1],
                        "tl": j.time_limit_seconds,
                        "queue": route_for(j.kind).queue,
                    }
                    for j, job_id, fingerprint, trace in zip(
                        jobs, ids, fingerprints, traces, strict=True
                    )
                ]
            ),
        },
    )
    rows = await cursor.fetchall()
    key_id = _key_id(rows)
    # Only id, created_at and waiting_reason come back: every other column of a new job is
    # what was sent or its default, so the record is built here (less to send and parse).
    returned = {row["id"]: row for row in rows if row["id"] is not None}
    inserted = {
        job_id: _new_record(job, job_id, returned[job_id], trace, request_id)
        for job, job_id, trace in zip(jobs, ids, traces, strict=True)
        if job_id in returned
    }
    replays = [
        j.idempotency_key
        for j, job_id in zip(jobs, ids, strict=True)
        if job_id not in inserted and j.idempotency_key is not None
    ]
    existing: dict[str, tuple[JobRecord, str]] = {}
    if replays:
        cursor = await execute(
            conn, "SELECT jobs", _EXISTING, {"principal_id": key_id, "keys": replays}
        )
        for row in await cursor.fetchall():
            record = _record(row)
            assert record is not None
            existing[row["idempotency_key"]] = (record, row["request_fingerprint"])
    outcomes = [
        _outcome(job, job_id, fingerprint, inserted, existing)
        for job, job_id, fingerprint in zip(jobs, ids, fingerprints, strict=True)
    ]
    return outcomes


def _new_record(
    job: NewJob,
    job_id: uuid.UUID,
    returned: dict[str, Any],
    trace: tuple[str, str | None],
    request_id: str | None,
) -> JobRecord:
    return JobRecord(
        id=job_id,
        kind=job.kind,
        status=JobStatus.queued.value,
        params=job.params,
        attempt=0,
        cancel_requested=False,
        waiting_reason=returned["waiting_reason"],
        time_limit_seconds=job.time_limit_seconds,
        trace_id=trace[0],
        traceparent=trace[1],
        request_id=request_id,
        created_at=returned["created_at"],
        started_at=None,
        finished_at=None,
        error_code=None,
        error_message=None,
        result=None,
        progress_total=None,
        progress_done=0,
        progress_failed=0,
        schedule_id=None,
        fire_time=None,
    )


def _outcome(
    job: NewJob,
    job_id: uuid.UUID,
    fingerprint: str,
    inserted: dict[uuid.UUID, JobRecord],
    existing: dict[str, tuple[JobRecord, str]],
) -> SubmitOutcome:
    if job_id in inserted:
        return SubmitOutcome(job=inserted[job_id], created=True)
    key = job.idempotency_key
    found = existing.get(key) if key is not None else None
    if found is None:  # the conflicting row was deleted by retention in between
        return SubmitOutcome(
            problem=InvalidRequest("Idempotency-Key raced with a deletion; try again.")
        )
    record, stored_fingerprint = found
    if stored_fingerprint != fingerprint:
        return SubmitOutcome(
            problem=IdempotencyConflict(
                f"Idempotency-Key {key!r} was already used for a different request "
                f"(job {record.id}).",
                where={"header": "Idempotency-Key"},
            )
        )
    return SubmitOutcome(job=record, created=False)


_GET = f"""
WITH {_KEY}
SELECT k.*, {_COLUMNS} FROM k LEFT JOIN jobs j ON j.id = %(job_id)s AND {_VISIBLE}
"""


async def get_job(conn: AsyncConnection, *, key_hash: str, job_id: uuid.UUID) -> JobRecord:
    """The job, if the key is valid (else Unauthenticated) and may see it (else NotFound)."""
    cursor = await execute(conn, "SELECT jobs", _GET, {"key_hash": key_hash, "job_id": job_id})
    rows = await cursor.fetchall()
    _key_id(rows)
    record = _record(rows[0])
    if record is None:
        raise _job_not_found(job_id)
    return record


def _job_not_found(job_id: uuid.UUID) -> NotFound:
    return NotFound(f"Job {job_id} not found.", where={"path": "job_id"})


_LIST = f"""
WITH {_KEY}
SELECT k.*, page.* FROM k LEFT JOIN LATERAL (
    SELECT {_COLUMNS} FROM jobs j
    WHERE {_VISIBLE}
      AND (%(status)s::text IS NULL OR j.status = %(status)s::text)
      AND (%(kind)s::text IS NULL OR j.kind = %(kind)s::text)
      AND (%(after_at)s::timestamptz IS NULL
           OR (j.created_at, j.id) < (%(after_at)s::timestamptz, %(after_id)s::uuid))
    ORDER BY j.created_at DESC, j.id DESC
    LIMIT %(limit)s
) page ON true
"""


async def list_jobs(
    conn: AsyncConnection,
    *,
    key_hash: str,
    status: JobStatus | None,
    kind: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[JobRecord], str | None]:
    """Newest first, keyset-paginated on (created_at, id), like queries.list_jobs."""
    after_at, after_id = decode_cursor(cursor) if cursor is not None else (None, None)
    result = await execute(
        conn,
        "SELECT jobs",
        _LIST,
        {
            "key_hash": key_hash,
            "status": status.value if status is not None else None,
            "kind": kind,
            "after_at": after_at,
            "after_id": after_id,
            "limit": limit + 1,
        },
    )
    rows = await result.fetchall()
    _key_id(rows)
    jobs = [record for record in map(_record, rows) if record is not None]
    next_cursor = encode_cursor(jobs[limit - 1]) if len(jobs) > limit else None
    return jobs[:limit], next_cursor


# One statement: the key check, the snapshot's view of the job (to tell "not yours" from
# "already finished" when nothing is updated), the transition and its event. A queued job
# is cancelled now; a running one keeps running, flagged. If a worker changes the row
# between snapshot and UPDATE, PostgreSQL re-reads it and re-evaluates the WHERE and the
# CASEs on the new version, so a job that just started is flagged, not cancelled.
_CANCEL = f"""
WITH {_KEY},
seen AS (
    SELECT j.id AS seen_id, j.status AS seen_status
    FROM k JOIN jobs j ON j.id = %(job_id)s AND {_VISIBLE}
),
c AS (
    UPDATE jobs j SET
        status = CASE WHEN j.status = 'queued' THEN 'cancelled' ELSE j.status END,
        cancel_requested = true,
        waiting_reason = CASE WHEN j.status = 'queued' THEN NULL ELSE j.waiting_reason END,
        finished_at = CASE WHEN j.status = 'queued' THEN now() ELSE j.finished_at END,
        updated_at = now()
    FROM seen
    WHERE j.id = seen.seen_id AND j.status IN ('queued', 'running')
    RETURNING {_COLUMNS}
),
ev AS (
    INSERT INTO job_events (job_id, type, attempt, data)
    SELECT id,
        CASE WHEN status = 'cancelled' THEN 'status' ELSE 'cancel_requested' END,
        attempt,
        CASE WHEN status = 'cancelled' THEN '{{"status": "cancelled"}}'::jsonb
            ELSE '{{}}'::jsonb END
    FROM c
)
SELECT k.*, seen.seen_status, c.* FROM k LEFT JOIN seen ON true LEFT JOIN c ON true
"""


async def cancel_job(conn: AsyncConnection, *, key_hash: str, job_id: uuid.UUID) -> JobRecord:
    """A queued job is cancelled now; a running one is flagged and stops between units.
    One statement: the key check, the transition and its event together."""
    cursor = await execute(conn, "UPDATE jobs", _CANCEL, {"key_hash": key_hash, "job_id": job_id})
    rows = await cursor.fetchall()
    _key_id(rows)
    row = rows[0]
    record = _record(row)
    if record is not None:
        return record
    seen_status: str | None = row["seen_status"]
    if seen_status is None:
        raise _job_not_found(job_id)
    if JobStatus(seen_status) in TERMINAL:
        raise InvalidTransition(f"Job {job_id} is already {seen_status}.")
    raise InvalidTransition(f"Job {job_id} finished before it could be cancelled.")
