"""Regular expressions that accept a *subset* of what a row model accepts, fast.

Validating every cell through pydantic costs ~3 µs per row; one regex over a row's line (its
fields joined by tabs, as COPY's text format wants them anyway) costs ~1 µs. A cell pattern
only accepts values that (a) the model's field accepts as they are (strings unchanged:
nothing to strip), (b) PostgreSQL parses as the same value, and (c) hold no tab (it separates
the cells of the line) and no NUL (PostgreSQL text cannot hold it). A row that fails is
checked cell by cell,
and cells that fail go through the model field, so the model stays the only judge of
validity; a column whose constraints are not all understood gets no pattern.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from core.imports.importer import Column, ColumnKind

# [0-9], never \d: \d also matches other scripts' digits, which the model does not accept.
_INNER = r"[^\t\x00]"  # any character but the cell separator and NUL
_EDGE = r"[^\s\x00]"  # ... that is not whitespace either (a model strips or keeps it)
# Days 29-31 are left to the model (it knows which months have them).
_DATE = r"[1-9][0-9]{3}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
_OFFSET = r"(?:Z|[+-](?:0[0-9]|1[0-4]):[0-5][0-9])"
_MAX_INT_DIGITS = 9  # anything with 9 digits fits a PostgreSQL integer


def _text(column: Column) -> str | None:
    low = max(column.min_length or 1, 1)
    high = column.max_length
    if high is not None and high < low:
        return None
    if high == 1:
        return _EDGE
    inner = f"{_INNER}{{{max(low - 2, 0)},{'' if high is None else high - 2}}}"
    return f"{_EDGE}{inner}{_EDGE}" if low >= 2 else f"{_EDGE}(?:{inner}{_EDGE})?"


def _sign(column: Column) -> str | None:
    if column.le is not None and column.kind is ColumnKind.decimal:
        return None
    if column.ge is None:
        return "[+-]?"
    return r"\+?" if column.ge == 0 else None


def _decimal(column: Column) -> str | None:
    sign = _sign(column)
    if sign is None:
        return None
    places = column.decimal_places
    if column.max_digits is not None:
        whole = column.max_digits - (places or 0)
        places = places or 0
    else:
        whole, places = 15, 6 if places is None else places
    if whole < 1:
        return None
    fraction = rf"(?:\.[0-9]{{1,{places}}})?" if places else ""
    return rf"{sign}[0-9]{{1,{whole}}}{fraction}"


def _integer(column: Column) -> str | None:
    sign = _sign(column)
    digits = _MAX_INT_DIGITS if column.le is None else min(_MAX_INT_DIGITS, len(str(column.le)) - 1)
    if sign is None or digits < 1:
        return None
    return rf"{sign}[0-9]{{1,{digits}}}"


def _no_bounds(pattern: str) -> Callable[[Column], str | None]:
    return lambda column: pattern if column.ge is None and column.le is None else None


_BUILDERS: dict[ColumnKind, Callable[[Column], str | None]] = {
    ColumnKind.string: _text,
    ColumnKind.decimal: _decimal,
    ColumnKind.integer: _integer,
    ColumnKind.datetime: _no_bounds(rf"{_DATE}(?:[T ]{_TIME}{_OFFSET}?)?"),
    ColumnKind.date: _no_bounds(_DATE),
}


def cell_pattern(column: Column) -> str | None:
    """The fast pattern of one cell of ``column`` (empty matches only if optional)."""
    builder = _BUILDERS.get(column.kind)
    if not column.fully_described or builder is None:
        return None
    pattern = builder(column)
    if pattern is None:
        return None
    return pattern if column.required else f"(?:{pattern})?"


class RowCheck:
    """Checks whole rows (tab-joined lines) at once, then single cells of the rows that fail."""

    def __init__(self, columns: Sequence[Column]) -> None:
        patterns = [cell_pattern(column) for column in columns]
        self._cells = [None if p is None else re.compile(p) for p in patterns]
        self._row = (
            re.compile("\t".join(f"(?:{p})" for p in patterns))
            if all(p is not None for p in patterns)
            else None
        )

    def suspects(self, lines: list[str]) -> Sequence[int]:
        """Indexes of lines that do not pass as a whole (one C-level regex call each)."""
        if self._row is None:
            return range(len(lines))
        return [i for i, match in enumerate(map(self._row.fullmatch, lines)) if match is None]

    def cell_passes(self, position: int, value: str) -> bool:
        pattern = self._cells[position]
        return pattern is not None and pattern.fullmatch(value) is not None
