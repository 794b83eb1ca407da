"""The ``import`` job body: stream the uploaded CSV, validate, load batch by batch.

Each batch is one unit (``JobContext.commit_unit``): its rows, its rejected rows, the job's
counters and the checkpoint (byte offset and row number of the next record, plus the
counters so far) commit in one transaction fenced by the lease. A new attempt after a crash
starts at the checkpoint, so the table and the counts end exactly as after one clean run.
Reading, validating and planning run a batch ahead in a reader process (reader_process.py).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from core import db, storage
from core.errors import NotFound
from core.imports import row_errors
from core.imports.ddl import TableInfo, ensure_table
from core.imports.failures import ImportFailed
from core.imports.failures import ImportFailureCode as Failure
from core.imports.importer import Importer
from core.imports.options import ImportParams
from core.imports.registry import ImporterNotFound, ImporterRegistry
from jobs.imports.batch_plan import duplicate_key_error, not_unique_error, plan_batch
from jobs.imports.bulk_load import BulkLoader
from jobs.imports.csv_source import RecordReader, check_sample, count_lines, read_header
from jobs.imports.header import match_header
from jobs.imports.import_state import ImportState
from jobs.imports.prepared_batch import PreparedBatch
from jobs.imports.reader_process import run_in_child
from jobs.imports.row_validation import RowValidator
from jobs.job_context import JobContext, Progress


def run_import(ctx: JobContext) -> dict[str, Any]:
    params = ImportParams.model_validate(ctx.params)
    importer = _importer(ctx, params)
    settings = ctx.settings
    csv.field_size_limit(min(settings.import_max_field_chars, settings.import_max_record_bytes))
    with _open_upload(ctx, params) as file:
        state = ImportState.from_checkpoint(ctx.checkpoint)
        if state is None:
            state = _start(ctx, params, importer, file)
        ctx.result = state.result(params)
        _check_threshold(params, state)  # a crash may have come between commit and check
        if not state.finished:
            table = ctx.retry_database(lambda: _table(ctx, importer))
            state = _load(ctx, params, importer, table, file, state)
    return state.result(params)


def _importer(ctx: JobContext, params: ImportParams) -> Importer:
    """The declaration as it is now (its file is read again for every attempt)."""
    try:
        importer = ImporterRegistry(ctx.settings.importers_dir).get(params.importer)
    except ImporterNotFound:
        raise ImportFailed(
            Failure.importer_missing,
            f"Importer {params.importer!r} is no longer declared (or its declaration is "
            "invalid: see `conveyor importers list`).",
        ) from None
    if params.mode == "upsert" and not importer.key:
        raise ImportFailed(
            Failure.mode_unsupported,
            f"Importer {importer.name!r} declares no primaryKey: only mode insert is possible.",
        )
    return importer


def _table(ctx: JobContext, importer: Importer) -> TableInfo:
    with db.transaction(ctx.sessions) as session:
        return ensure_table(session, importer)


@contextmanager
def _open_upload(ctx: JobContext, params: ImportParams) -> Iterator[BinaryIO]:
    try:
        file = storage.open_upload(ctx.settings.storage_dir, params.upload.path)
    except NotFound as error:
        raise ImportFailed(Failure.upload_missing, error.message) from error
    with file:
        yield file


def _start(
    ctx: JobContext, params: ImportParams, importer: Importer, file: BinaryIO
) -> ImportState:
    """First attempt (or a retry from scratch): whole-file checks, header, a clean slate."""
    encoding = params.encoding or "utf-8"
    # The sample checks and the header (bounded reads) come before the pass over the whole
    # file, so a file that is not a CSV at all fails without being read to its end.
    check_sample(file, encoding=encoding)
    header = read_header(
        file,
        encoding=encoding,
        delimiter=params.delimiter,
        known=set(importer.headers),
        max_record_bytes=ctx.settings.import_max_record_bytes,
        max_columns=ctx.settings.import_max_columns,
    )
    match_header(header.fields, importer, row=header.row)
    lines = count_lines(file, encoding=encoding)
    state = ImportState.starting(header, encoding=encoding, estimate=max(lines - header.row, 0))

    def begin(session: Session) -> Progress:
        row_errors.delete_for_job(session, job_id=ctx.job_id)  # a retry starts over
        ctx.result = state.result(params)
        return state.progress()

    ctx.commit_unit(begin)
    return state


def _load(
    ctx: JobContext,
    params: ImportParams,
    importer: Importer,
    table: TableInfo,
    file: BinaryIO,
    state: ImportState,
) -> ImportState:
    columns = match_header(state.header, importer, row=state.header_row)
    names = [column.name for column in columns]
    loader = BulkLoader(
        importer,
        table,
        names,
        mode=params.mode,
        dry_run=params.dry_run,
        reveal_table=params.reveal_table,
    )
    batches = run_in_child(lambda: _prepared_batches(ctx, params, importer, file, state, columns))
    for batch in batches:
        state = _commit_batch(ctx, params, importer, loader, state, batch)
        _check_threshold(params, state)
    return state


def _prepared_batches(
    ctx: JobContext,
    params: ImportParams,
    importer: Importer,
    file: BinaryIO,
    state: ImportState,
    columns: tuple[Any, ...],
) -> Iterator[PreparedBatch]:
    """Read, validate and plan batches (runs in the reader process; touches no database)."""
    settings = ctx.settings
    names = [column.name for column in columns]
    validator = RowValidator(columns, null=importer.copy_null, keys=importer.key)
    reader = RecordReader(
        file,
        encoding=state.encoding,
        delimiter=state.delimiter,
        width=len(columns),
        offset=state.offset,
        next_row=state.next_row,
        max_record_bytes=settings.import_max_record_bytes,
        batch_bytes=settings.import_batch_bytes,
    )
    key_positions = [names.index(key) for key in importer.key]
    keep_keys = params.mode == "insert" or bool(importer.unique_columns)
    while True:
        raw = reader.read_batch(settings.import_batch_rows)
        checked = validator.check(raw.rows, raw.row_numbers)
        plan = plan_batch(
            checked, key_positions=key_positions, key_names=importer.key, mode=params.mode
        )
        yield PreparedBatch.of(raw, checked, plan, keep_keys=keep_keys)
        if raw.exhausted:
            return


def _commit_batch(
    ctx: JobContext,
    params: ImportParams,
    importer: Importer,
    loader: BulkLoader,
    state: ImportState,
    batch: PreparedBatch,
) -> ImportState:
    committed: list[ImportState] = []

    def unit(session: Session) -> Progress:
        # May run again if the database drops mid-unit: it derives everything from ``state``.
        loaded = loader.load(session, batch)
        present = set(loaded.existing)
        found = [i for i, key in enumerate(batch.keys) if key in present]
        raws = batch.fields_of(found + [index for index, _ in loaded.not_unique])
        refused = [
            duplicate_key_error(batch.row_numbers[i], importer.key, batch.keys[i], raws[i])
            for i in found
        ] + [not_unique_error(batch.row_numbers[i], name, raws[i]) for i, name in loaded.not_unique]
        row_errors.add_row_errors(session, job_id=ctx.job_id, errors=batch.errors + refused)
        after = state.advanced(batch, loaded, existing=len(refused), dry_run=params.dry_run)
        ctx.result = after.result(params)
        committed[:] = [after]
        return after.progress()

    ctx.commit_unit(unit)
    return committed[0]


def _check_threshold(params: ImportParams, state: ImportState) -> None:
    if params.threshold_exceeded(rejected=state.rejected, rows=state.rows):
        raise ImportFailed(
            Failure.error_threshold_exceeded,
            f"{state.rejected:,} of {state.rows:,} rows were rejected, more than the "
            f"error_threshold of {params.error_threshold}; rows before that stay loaded.",
            where={"row": state.next_row - 1},
        )
