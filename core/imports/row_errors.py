"""Rejected rows of imports (the ``import_errors`` table): row-level codes, writing them with
their batch, and reading them back by keyset (row, id) for the API and the CSV download."""

from __future__ import annotations

import base64
import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.errors import InvalidRequest
from core.models import ImportRowError

# Stored values are for humans; a 10 MB cell must not become a 10 MB error row.
VALUE_MAX_CHARS = 1_000
RAW_CELL_MAX_CHARS = 10_000
TRUNCATED = "…"
# PostgreSQL text cannot hold NUL; the rejected value is shown with a visible stand-in.
NUL_STAND_IN = "\u2400"


class RowErrorCode(enum.StrEnum):
    """Why a row was rejected; the import goes on."""

    wrong_field_count = "wrong_field_count"
    malformed_row = "malformed_row"
    nul_byte = "nul_byte"
    required = "required"
    too_long = "too_long"
    too_short = "too_short"
    invalid_value = "invalid_value"
    out_of_range = "out_of_range"
    duplicate_key = "duplicate_key"


@dataclass(frozen=True)
class RowError:
    """One problem with one row (``row`` is 1-based with the header as row 1)."""

    row: int
    column: str | None
    code: RowErrorCode
    message: str
    value: str | None = None
    raw: Sequence[str] | None = None


def _clip(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    text = text.replace("\x00", NUL_STAND_IN)
    return text if len(text) <= limit else text[:limit] + TRUNCATED


def add_row_errors(session: Session, *, job_id: uuid.UUID, errors: Sequence[RowError]) -> None:
    """Insert errors; the raw row is kept on each row's first error only."""
    if not errors:
        return
    seen: set[int] = set()
    values = []
    for error in errors:
        first = error.row not in seen
        seen.add(error.row)
        raw = (
            [_clip(cell, RAW_CELL_MAX_CHARS) for cell in error.raw] if first and error.raw else None
        )
        values.append(
            {
                "job_id": job_id,
                "row": error.row,
                "column": error.column,
                "code": error.code.value,
                "message": error.message,
                "value": _clip(error.value, VALUE_MAX_CHARS),
                "raw": raw,
            }
        )
    session.execute(sa.insert(ImportRowError), values)


def delete_for_job(session: Session, *, job_id: uuid.UUID) -> None:
    """Forget a previous run's errors when an import starts over from the beginning."""
    session.execute(sa.delete(ImportRowError).where(ImportRowError.job_id == job_id))


def _encode_cursor(error: ImportRowError) -> str:
    return base64.urlsafe_b64encode(f"{error.row}:{error.id}".encode()).decode()


_MAX_BIGINT = 2**63 - 1


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        row, error_id = base64.urlsafe_b64decode(cursor.encode()).decode().split(":")
        decoded = int(row), int(error_id)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidRequest("Malformed cursor.", where={"query": "cursor"}) from error
    if not all(0 <= number <= _MAX_BIGINT for number in decoded):  # a bigint in the database
        raise InvalidRequest("Malformed cursor.", where={"query": "cursor"})
    return decoded


def list_errors(
    session: Session, *, job_id: uuid.UUID, limit: int = 100, cursor: str | None = None
) -> tuple[list[ImportRowError], str | None]:
    """Errors in row order, keyset-paginated on (row, id)."""
    query = (
        sa.select(ImportRowError)
        .where(ImportRowError.job_id == job_id)
        .order_by(ImportRowError.row, ImportRowError.id)
        .limit(limit + 1)
    )
    if cursor is not None:
        after = _decode_cursor(cursor)
        query = query.where(sa.tuple_(ImportRowError.row, ImportRowError.id) > sa.tuple_(*after))
    errors = list(session.scalars(query))
    next_cursor = _encode_cursor(errors[limit - 1]) if len(errors) > limit else None
    return errors[:limit], next_cursor
