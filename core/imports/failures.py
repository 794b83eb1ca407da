"""Why an import fails as a whole. Rejected *rows* have their own codes
(``core.imports.row_errors.RowErrorCode``) and do not fail the job."""

from __future__ import annotations

import enum
from typing import Any

from core.errors import JobFailed
from core.imports.row_errors import clip_message


class ImportFailureCode(enum.StrEnum):
    """The job's ``error.code`` when an import fails as a whole."""

    empty_file = "empty_file"
    not_csv = "not_csv"
    undecodable = "undecodable"
    missing_column = "missing_column"
    duplicate_header = "duplicate_header"
    unknown_header = "unknown_header"
    error_threshold_exceeded = "error_threshold_exceeded"
    too_many_columns = "too_many_columns"
    record_too_large = "record_too_large"
    upload_missing = "upload_missing"
    importer_missing = "importer_missing"
    mode_unsupported = "mode_unsupported"
    incompatible_table = "incompatible_table"
    table_unavailable = "table_unavailable"
    load_failed = "load_failed"


class ImportFailed(JobFailed):
    """The import failed."""

    def __init__(
        self, code: ImportFailureCode, message: str, *, where: dict[str, Any] | None = None
    ):
        super().__init__(clip_message(message), code=code.value, where=where)
