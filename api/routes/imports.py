"""/v1/imports (submit a CSV), /v1/importers (what can be imported) and
/v1/jobs/{id}/errors (an import's rejected rows, as JSON pages or a CSV download)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api import rejected_csv
from api.deps import (
    AppSettings,
    CurrentPrincipal,
    IdempotencyKey,
    Importers,
    JobDispatcher,
    JobId,
    RequestId,
    Sessions,
)
from api.schemas.imports import (
    IMPORT_FORM_SCHEMA,
    ImporterList,
    ImporterOut,
    ImportForm,
    RowErrorOut,
    RowErrorPage,
)
from api.schemas.jobs import JobOut
from api.schemas.problems import problem_responses
from api.upload_stream import check_content_length, receive_form
from core import db, storage
from core.api_keys import Principal
from core.broker.publisher import JobMessage
from core.errors import InvalidRequest, NotFound
from core.imports import row_errors, uploads
from core.imports.options import ImportParams, StoredFile
from core.imports.registry import ImporterRegistry
from core.imports.uploads import IMPORT_KIND
from core.lifecycle import commands, queries
from core.models import ImportRowError, Job
from core.settings import Settings
from core.storage import StoredUpload, UploadWriter

router = APIRouter(tags=["imports"], responses=problem_responses(401, 422, 503))


def _import_params(
    fields: dict[str, str],
    upload: StoredUpload | None,
    filename: str | None,
    *,
    importers: ImporterRegistry,
    principal: Principal,
) -> ImportParams:
    if upload is None:
        raise InvalidRequest("The form needs a 'file' part with the CSV.", where={"field": "file"})
    stored = StoredFile(path=upload.path, sha256=upload.sha256, size=upload.size, filename=filename)
    try:
        form = ImportForm.model_validate(fields)
    except ValidationError as error:
        raise RequestValidationError(
            [{**item, "loc": ("body", *item["loc"])} for item in error.errors()]
        ) from error
    # 404 for an importer this principal may not run, exactly as for one that does not exist.
    importer = importers.get_for(form.importer, principal)
    options = form.for_importer(importer, field="mode")
    try:
        return options.params(
            importer=importer.name,
            upload=stored,
            dry_run=form.dry_run,
            reveal_table=importer.may_read_table(principal),
        )
    except ValidationError as error:
        raise RequestValidationError(
            [{**item, "loc": ("body", *item["loc"])} for item in error.errors()]
        ) from error


def _check_quota(
    sessions: db.Sessions, settings: Settings, principal: Principal, upload: StoredUpload
) -> None:
    """The principal's held uploads plus this one (once, if its jobs already hold the same
    bytes) must fit the quota."""
    with db.transaction(sessions) as session:
        used = uploads.stored_bytes(
            session,
            principal_id=principal.id,
            retention_seconds=settings.upload_retention_seconds,
            excluding=upload.sha256,
        )
    uploads.check_quota(used=used, adding=upload.size, quota=settings.upload_quota_bytes)


def _submit(
    sessions: db.Sessions,
    settings: Settings,
    principal: Principal,
    params: ImportParams,
    *,
    idempotency_key: str | None,
    request_id: str | None,
) -> tuple[JobOut, JobMessage | None]:
    """The job, and the message to publish when it was created (None on a replay)."""
    with db.transaction(sessions) as session:
        submitted = commands.submit_job(
            session,
            kind=IMPORT_KIND,
            params=params.model_dump(mode="json"),
            principal_id=principal.id,
            max_attempts=settings.max_attempts,
            time_limit_seconds=settings.time_limit_for(IMPORT_KIND),
            idempotency_key=idempotency_key,
            request_id=request_id,
        )
        message = JobMessage.of(submitted.job) if submitted.created else None
        return JobOut.from_job(submitted.job), message


@router.post(
    "/v1/imports",
    status_code=202,
    summary="Upload a CSV and import it",
    description=(
        "multipart/form-data with the CSV in `file`. The upload is streamed to storage "
        "(size-capped by CONVEYOR_MAX_UPLOAD_BYTES and the caller's storage quota, sha256 "
        "recorded) and becomes an `import` job; poll GET /v1/jobs/{id}, read rejected rows "
        "at GET /v1/jobs/{id}/errors. An importer the caller may not run answers 404."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": IMPORT_FORM_SCHEMA}},
        }
    },
    responses={
        200: {"model": JobOut, "description": "Replay: this Idempotency-Key's earlier job."},
        **problem_responses(400, 404, 409, 413),
    },
)
async def submit_import(
    request: Request,
    response: Response,
    dispatcher: JobDispatcher,
    sessions: Sessions,
    settings: AppSettings,
    principal: CurrentPrincipal,
    importers: Importers,
    request_id: RequestId,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    check_content_length(request, settings.max_upload_bytes)
    # No single upload may be larger than the whole quota; the exact check (with what the
    # principal's jobs already hold) comes once the upload's sha256 is known.
    quota = settings.upload_quota_bytes
    over_quota = uploads.quota_error(used=0, quota=quota)
    check_content_length(request, quota, too_large=over_quota)
    writer = await run_in_threadpool(
        UploadWriter, settings.storage_dir, max_bytes=settings.max_upload_bytes
    )
    try:
        form = await receive_form(
            request,
            writer=writer,
            file_field="file",
            max_bytes=settings.max_upload_bytes,
            quota=(quota, over_quota),
        )
    finally:
        writer.abort()  # no-op once finished; removes the partial file otherwise
    try:
        # In the threadpool: reading declarations touches the filesystem.
        params = await run_in_threadpool(
            partial(_import_params, importers=importers, principal=principal),
            form.fields,
            form.upload,
            form.filename,
        )
        if form.upload is not None:
            await run_in_threadpool(_check_quota, sessions, settings, principal, form.upload)
        job, message = await run_in_threadpool(
            _submit,
            sessions,
            settings,
            principal,
            params,
            idempotency_key=idempotency_key,
            request_id=request_id,
        )
    except BaseException:
        if form.upload is not None:  # a refused form leaves no file behind
            await run_in_threadpool(storage.discard, settings.storage_dir, form.upload)
        raise
    if message is not None:
        # Through the dispatcher, like POST /v1/jobs: a hung broker must not hold clients.
        dispatcher.dispatch(message)
    else:
        response.status_code = 200
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job


@router.get(
    "/v1/importers",
    summary="The importers you may run, with their columns",
    description="Importers are declaration files in CONVEYOR_IMPORTERS_DIR; each names the "
    "roles and API key scopes that may run it. Others are not listed.",
)
def list_importers(principal: CurrentPrincipal, importers: Importers) -> ImporterList:
    return ImporterList(
        items=[ImporterOut.from_importer(i) for i in importers.visible_to(principal)]
    )


def _import_job(sessions: db.Sessions, job_id: uuid.UUID, principal: Principal) -> Job:
    with db.transaction(sessions) as session:
        job = queries.get_job(session, job_id=job_id, principal=principal)
    if job.kind != IMPORT_KIND:
        raise NotFound(f"Job {job_id} is not an import; it has no rejected rows.")
    return job


def _csv_header(job: Job) -> list[str]:
    result: dict[str, Any] = job.result or {}
    checkpoint: dict[str, Any] = job.checkpoint or {}
    return list(result.get("columns") or checkpoint.get("header") or [])


CSV_PAGE_ROWS = 1_000


def _errors_in_pages(sessions: db.Sessions, job_id: uuid.UUID) -> Iterator[ImportRowError]:
    """Every error of the job, a page per short transaction: a slow client holds no
    connection and no transaction between pages, however long its download takes."""
    cursor: str | None = None
    while True:
        with db.transaction(sessions) as session:
            page, cursor = row_errors.list_errors(
                session, job_id=job_id, limit=CSV_PAGE_ROWS, cursor=cursor
            )
        yield from page
        if cursor is None:
            return


def _csv_download(sessions: db.Sessions, job: Job) -> StreamingResponse:
    header = _csv_header(job)

    def lines() -> Iterator[bytes]:
        yield from rejected_csv.render(_errors_in_pages(sessions, job.id), header)

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="job-{job.id}-errors.csv"'},
    )


@router.get(
    "/v1/jobs/{job_id}/errors",
    summary="An import's rejected rows",
    description=(
        "Errors in row order (row 1 is the header), one per bad cell. `?format=csv` downloads "
        "the rejected rows instead: their original columns plus error_row, error_column and "
        "error_message, with formula-like cells neutralised."
    ),
    response_model=RowErrorPage,
    responses={
        200: {"content": {"text/csv": {}}, "description": "JSON page or CSV download"},
        **problem_responses(404),
    },
)
def list_import_errors(
    job_id: JobId,
    sessions: Sessions,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    format: Literal["json", "csv"] = "json",
) -> Response | RowErrorPage:
    job = _import_job(sessions, job_id, principal)
    if format == "csv":
        return _csv_download(sessions, job)
    with db.transaction(sessions) as session:
        errors, next_cursor = row_errors.list_errors(
            session, job_id=job_id, limit=limit, cursor=cursor
        )
        return RowErrorPage(
            items=[RowErrorOut.from_error(error) for error in errors], next_cursor=next_cursor
        )
