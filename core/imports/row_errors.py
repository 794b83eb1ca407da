"""Rejected rows of imports (the ``import_errors`` table): row-level codes, writing them with
their batch, and reading them back by keyset (row, id) for the API and the CSV download."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core import page_cursor
from core.models import ImportRowError

# Stored values are for humans; a 10 MB cell must not become a 10 MB error row.
VALUE_MAX_CHARS = 1_000
MESSAGE_MAX_CHARS = 500
RAW_CELL_MAX_CHARS = 10_000
RAW_MAX_CHARS = 100_000  # all cells of a stored raw row together
RAW_MAX_CELLS = 1_000
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
    pattern_mismatch = "pattern_mismatch"
    not_in_enum = "not_in_enum"
    duplicate_key = "duplicate_key"
    not_unique = "not_unique"


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


def clip_message(text: str) -> str:
    """Messages may quote values or header names: a hostile file must not make them huge."""
    return text if len(text) <= MESSAGE_MAX_CHARS else text[:MESSAGE_MAX_CHARS] + TRUNCATED


def clip_raw(cells: Sequence[str]) -> list[str]:
    """A raw row as stored: each cell clipped, and the row as a whole bounded too."""
    clipped: list[str] = []
    budget = RAW_MAX_CHARS
    for cell in cells[:RAW_MAX_CELLS]:
        text = _clip(cell, min(RAW_CELL_MAX_CHARS, max(budget, 0))) or ""
        budget -= len(text)
        clipped.append(text)
    if len(cells) > RAW_MAX_CELLS:
        clipped.append(TRUNCATED)
    return clipped


def add_row_errors(session: Session, *, job_id: uuid.UUID, errors: Sequence[RowError]) -> None:
    """Insert errors; the raw row is kept on each row's first error only."""
    if not errors:
        return
    seen: set[int] = set()
    values = []
    for error in errors:
        first = error.row not in seen
        seen.add(error.row)
        raw = clip_raw(error.raw) if first and error.raw else None
        values.append(
            {
                "job_id": job_id,
                "row": error.row,
                "column": error.column,
                "code": error.code.value,
                "message": clip_message(error.message),
                "value": _clip(error.value, VALUE_MAX_CHARS),
                "raw": raw,
            }
        )
    session.execute(sa.insert(ImportRowError), values)


def delete_for_job(session: Session, *, job_id: uuid.UUID) -> None:
    """Forget a previous run's errors when an import starts over from the beginning."""
    session.execute(sa.delete(ImportRowError).where(ImportRowError.job_id == job_id))


def _encode_cursor(error: ImportRowError) -> str:
    return page_cursor.encode(error.row, error.id)


_MAX_BIGINT = 2**63 - 1


def _cursor_key(parts: list[str]) -> tuple[int, int]:
    row, error_id = parts
    key = int(row), int(error_id)
    if not all(0 <= number <= _MAX_BIGINT for number in key):  # a bigint in the database
        raise ValueError("out of range")
    return key


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
        after = page_cursor.decode(cursor, _cursor_key)
        query = query.where(sa.tuple_(ImportRowError.row, ImportRowError.id) > sa.tuple_(*after))
    errors = list(session.scalars(query))
    next_cursor = _encode_cursor(errors[limit - 1]) if len(errors) > limit else None
    return errors[:limit], next_cursor
