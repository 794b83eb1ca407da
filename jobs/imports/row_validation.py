"""Validating a batch of rows against the importer's row model, column by column.

Each row is first tried against the fast check (one regex over its tab-joined line, which is
also its line in the COPY payload); only a row that fails is looked at cell by cell, and only
cells that fail their cell check go through the model's field validator, which is the judge.
A valid cell that the model changes (stripped, normalised) is replaced by its canonical text,
which is what gets loaded; an invalid one becomes a RowError with its row number and column.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from core.imports.importer import Column, ColumnKind
from core.imports.row_errors import RowError, RowErrorCode
from jobs.imports.fast_checks import RowCheck

_CODES = {
    "string_too_long": RowErrorCode.too_long,
    "string_too_short": RowErrorCode.too_short,
    "greater_than": RowErrorCode.out_of_range,
    "greater_than_equal": RowErrorCode.out_of_range,
    "less_than": RowErrorCode.out_of_range,
    "less_than_equal": RowErrorCode.out_of_range,
}


@dataclass
class CheckedBatch:
    """The rows that passed (canonical text, file column order), each with its line in COPY
    text format, and the errors of the rest."""

    rows: list[list[str]]
    row_numbers: list[int]
    lines: list[str]
    # Rows with a cell the model changed (index -> fields as read), for error reports.
    originals: dict[int, list[str]] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)
    rejected: int = 0  # rows with at least one error
    blank: int = 0  # rows with every cell blank: skipped like blank lines

    def keep(self, fields: list[str], row: int, line: str) -> None:
        self.rows.append(fields)
        self.row_numbers.append(row)
        self.lines.append(line)

    def original(self, index: int) -> list[str]:
        return self.originals.get(index, self.rows[index])


def canonical_text(value: Any) -> str:
    """A validated value as text PostgreSQL parses back to the same value ('' is NULL)."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):  # datetime included
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


@dataclass(frozen=True)
class CellError:
    code: RowErrorCode
    message: str


def judge_cell(column: Column, value: str) -> str | CellError:
    """The canonical text of a valid cell, or why it is invalid (the model decides)."""
    if "\x00" in value:
        return CellError(RowErrorCode.nul_byte, "The value contains a NUL byte.")
    if not value.strip():
        if column.required:
            return CellError(RowErrorCode.required, f"{column.name} is required.")
        return ""
    # Surrounding whitespace never matters; strings are stripped (or not) by the model itself.
    candidate = value if column.kind is ColumnKind.string else value.strip()
    try:
        return canonical_text(column.adapter.validate_python(candidate))
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        return CellError(_CODES.get(first["type"], RowErrorCode.invalid_value), first["msg"])


class RowValidator:
    """Validates rows whose fields are in ``columns`` order (the file's header order)."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = tuple(columns)
        self._check = RowCheck(columns)

    def check(self, rows: list[list[str]], row_numbers: Sequence[int]) -> CheckedBatch:
        lines = list(map("\t".join, rows))
        suspects = self._check.suspects(lines)
        _escape_for_copy(lines)  # suspect lines are rebuilt below from their checked cells
        if not suspects:
            return CheckedBatch(rows, list(row_numbers), lines)  # the common case
        batch = CheckedBatch([], [], [])
        odd = iter(suspects)
        next_odd = next(odd, None)
        for index, fields in enumerate(rows):
            if index != next_odd:
                batch.keep(fields, row_numbers[index], lines[index])
                continue
            next_odd = next(odd, None)
            self._judge_row(batch, fields, row_numbers[index])
        return batch

    def _judge_row(self, batch: CheckedBatch, fields: list[str], row: int) -> None:
        """A row that failed the fast check, cell by cell: keep it (canonical, escaped for
        COPY), reject it, or skip it when every cell is blank."""
        canonical: list[str] = []
        problems: list[tuple[int, CellError]] = []
        for position, value in enumerate(fields):
            if self._check.cell_passes(position, value):
                canonical.append(value)
                continue
            verdict = judge_cell(self.columns[position], value)
            if isinstance(verdict, CellError):
                problems.append((position, verdict))
            else:
                canonical.append(verdict)
        if not problems:
            if canonical != fields:
                batch.originals[len(batch.rows)] = fields
            batch.keep(canonical, row, "\t".join(map(escape_copy_text, canonical)))
        elif any(cell.strip() for cell in fields):
            batch.rejected += 1
            for position, problem in problems:
                name = self.columns[position].name
                batch.errors.append(
                    RowError(row, name, problem.code, problem.message, fields[position], fields)
                )
        else:
            batch.blank += 1


_LINE_SPECIALS = re.compile(r"[\\\n\r]")


def _escape_for_copy(lines: list[str]) -> None:
    """Escape, in place, lines of fast-checked cells for COPY's text format: such cells hold
    no tab, so only backslash, newline and CR need escaping, and the whole line can be
    escaped at once. Most batches have none: one scan of the joined text tells."""
    joined = "\x00".join(lines)
    if "\n" not in joined and "\r" not in joined and "\\" not in joined:
        return
    for index, found in enumerate(map(_LINE_SPECIALS.search, lines)):
        if found is not None:
            lines[index] = (
                lines[index].replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
            )


def escape_copy_text(value: str) -> str:
    """A field as COPY's text format wants it (NULL is '', so only these need escaping)."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )
