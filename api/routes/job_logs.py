"""/v1/jobs/{id}/logs: a job's log, as pages or as a live Server-Sent Events stream.

The stream sends each line as an SSE event whose ``id`` is the line's id, so a client that
reconnects with ``Last-Event-ID`` continues exactly after the last line it saw: nothing
lost, nothing repeated. It ends with an ``end`` event (the job's final status) once the job
is finished and every line has been sent. New lines wake the stream through PostgreSQL
NOTIFY (api/log_notifier.py); without a notification it looks again every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentPrincipal, JobId, Sessions
from api.log_notifier import LogNotifier
from api.schemas.job_logs import LogLineOut, LogPage
from api.schemas.problems import problem_responses
from core import db
from core.api_keys import Principal
from core.errors import InvalidRequest
from core.lifecycle import job_logs, queries
from core.lifecycle.states import TERMINAL, JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["logs"], responses=problem_responses(401, 404, 503))

PAGE = 500
# Without a notification, look for new lines this often anyway; send a comment this often so
# proxies and clients know the stream is alive.
RECHECK_SECONDS = 3.0
KEEPALIVE_SECONDS = 15.0


def _visible(sessions: db.Sessions, job_id: uuid.UUID, principal: Principal) -> None:
    with db.transaction(sessions) as session:
        queries.get_job(session, job_id=job_id, principal=principal)


def _read(
    sessions: db.Sessions, job_id: uuid.UUID, after: int
) -> tuple[JobStatus, dict[str, Any] | None, list[LogLineOut]]:
    """The job's status, then the lines after ``after``: a status read first means every line
    written before the job finished is in the page."""
    with db.transaction(sessions) as session:
        job = queries.get_job(session, job_id=job_id)
        status = JobStatus(job.status)
        error = {"code": job.error_code, "message": job.error_message} if job.error_code else None
        rows = job_logs.list_logs(session, job_id=job_id, after=after, limit=PAGE)
        return status, error, [LogLineOut.of(row) for row in rows]


@router.get("/{job_id}/logs", summary="A page of a job's log")
def list_logs(
    job_id: JobId,
    sessions: Sessions,
    principal: CurrentPrincipal,
    after: Annotated[int, Query(ge=0, description="Only lines with a larger id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> LogPage:
    with db.transaction(sessions) as session:
        queries.get_job(session, job_id=job_id, principal=principal)
        rows = job_logs.list_logs(session, job_id=job_id, after=after, limit=limit)
        items = [LogLineOut.of(row) for row in rows]
    return LogPage(items=items, next_after=items[-1].id if items else after)


def _start_after(last_event_id: str | None, after: int) -> int:
    if last_event_id is None:
        return after
    try:
        value = int(last_event_id)
    except ValueError:
        value = -1
    if value < 0:
        raise InvalidRequest(
            "Last-Event-ID must be a log line id (a non-negative integer).",
            where={"header": "Last-Event-ID"},
        )
    return value


def _sse(event: str, data: str, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


async def _stream(
    request: Request, sessions: db.Sessions, notifier: LogNotifier, job_id: uuid.UUID, after: int
) -> AsyncIterator[bytes]:
    wake = notifier.subscribe(str(job_id))
    idle = 0.0
    try:
        while True:
            wake.clear()
            status, error, lines = await run_in_threadpool(_read, sessions, job_id, after)
            for line in lines:
                yield _sse("log", line.model_dump_json(), line.id)
                after = line.id
            if len(lines) == PAGE:
                continue
            if status in TERMINAL:
                yield _sse("end", json.dumps({"status": status.value, "error": error}))
                return
            if await request.is_disconnected():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), RECHECK_SECONDS)
            idle = 0.0 if lines or wake.is_set() else idle + RECHECK_SECONDS
            if idle >= KEEPALIVE_SECONDS:
                idle = 0.0
                yield b": keepalive\n\n"
    finally:
        notifier.unsubscribe(str(job_id), wake)


@router.get(
    "/{job_id}/logs/stream",
    summary="Follow a job's log (Server-Sent Events)",
    description=(
        "`event: log` per line (`id` = the line's id, `data` = the line as JSON), then "
        "`event: end` with the final status. Reconnect with `Last-Event-ID` to resume."
    ),
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_logs(
    job_id: JobId,
    request: Request,
    sessions: Sessions,
    principal: CurrentPrincipal,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    after: Annotated[int, Query(ge=0, description="Start after this line id.")] = 0,
) -> StreamingResponse:
    start = _start_after(last_event_id, after)
    await run_in_threadpool(_visible, sessions, job_id, principal)
    notifier: LogNotifier = request.app.state.log_notifier
    return StreamingResponse(
        _stream(request, sessions, notifier, job_id, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
