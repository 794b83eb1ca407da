"""Validating a batch of rows against the importer's declared fields, column by column.

Each row is first tried against the fast check (one regex over its tab-joined line, which is
also its line in the COPY payload); only a row that fails is looked at cell by cell, and only
cells that fail their cell check go through the field's own parser and constraints
(``Column.judge``), which is the judge. A valid cell that the field changes (stripped,
normalised) is replaced by its canonical text, which is what gets loaded; an invalid one
becomes a RowError with its row number and column.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.imports.cell_values import CellInvalid
from core.imports.field_types import Column
from core.imports.row_errors import RowError, RowErrorCode
from jobs.imports.fast_checks import RowCheck


@dataclass
class CheckedBatch:
    """The rows that passed (canonical text, file column order), each with its line in COPY
    text format, and the errors of the rest."""

    rows: list[list[str]]
    row_numbers: list[int]
    lines: list[str]
    # Rows with a cell the field changed (index -> fields as read), for error reports.
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


@dataclass(frozen=True)
class CellError:
    code: RowErrorCode
    message: str


def judge_cell(column: Column, value: str) -> str | CellError | None:
    """The canonical text of a valid cell (None: missing, NULL), or why it is invalid."""
    try:
        return column.judge(value)
    except CellInvalid as error:
        return CellError(error.code, error.message)


class RowValidator:
    """Validates rows whose fields are in ``columns`` order (the file's header order)."""

    def __init__(
        self, columns: Sequence[Column], *, null: str = "", keys: Sequence[str] = ()
    ) -> None:
        self.columns = tuple(columns)
        self._null = null  # COPY's NULL marker: '' or \N (see Importer.copy_null)
        self._check = RowCheck(columns, null=null, keys=keys)

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
        canonical: list[str | None] = []
        problems: list[tuple[int, CellError]] = []
        for position, value in enumerate(fields):
            if self._check.cell_passes(position, value):
                canonical.append(None if value == "" and self._null == "" else value)
                continue
            verdict = judge_cell(self.columns[position], value)
            if isinstance(verdict, CellError):
                problems.append((position, verdict))
            else:
                canonical.append(verdict)
        if not problems:
            texts = ["" if cell is None else cell for cell in canonical]
            if texts != fields:
                batch.originals[len(batch.rows)] = fields
            line = "\t".join(self._null if c is None else escape_copy_text(c) for c in canonical)
            batch.keep(texts, row, line)
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
