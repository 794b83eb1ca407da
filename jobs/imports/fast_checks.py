"""Regular expressions that accept a *subset* of what a declared field accepts, fast.

Judging every cell through its field's parser costs microseconds per row; one regex over a
row's line (its fields joined by tabs, as COPY's text format wants them anyway) costs about
one. A cell pattern only accepts values that (a) the field accepts as they are (strings
unchanged: nothing to strip), (b) PostgreSQL parses as the same value, (c) hold no tab (it
separates the cells of the line) and no NUL (PostgreSQL text cannot hold it), and (d) for
key columns, are the value's only spelling (batches match keys by their text). A row that
fails is checked cell by cell, and cells that fail go through the field itself, which stays
the only judge; fields with a pattern, an enum, a non-default format or number syntax get
no fast pattern.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from core.imports.field_types import DEFAULT_FALSE, DEFAULT_TRUE, Column, FieldType

# [0-9], never \d: \d also matches other scripts' digits, which fields do not accept.
_INNER = r"[^\t\x00]"  # any character but the cell separator and NUL
_EDGE = r"[^\s\x00]"  # ... that is not whitespace either (stripped when trimming)
# Days 29-31 are left to the field (it knows which months have them).
_DATE = r"[1-9][0-9]{3}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
_OFFSET = r"(?:Z|[+-](?:0[0-9]|1[0-4]):[0-5][0-9])"
_BOOLEAN = r"(?:true|True|TRUE|1|false|False|FALSE|0)"
_MAX_INT_DIGITS = 18  # anything with 18 digits fits a bigint


def _text(column: Column, *, empty_is_value: bool) -> str | None:
    if column.format != "default":
        return None
    low = column.min_length or 0
    if not empty_is_value:
        low = max(low, 1)
    high = column.max_length
    if high is not None and high < low:
        return None
    if not column.trim:
        return f"{_INNER}{{{low},{'' if high is None else high}}}"
    if high == 0:
        return ""
    if high == 1:
        return f"{_EDGE}?" if low == 0 else _EDGE
    inner = f"{_INNER}{{{max(low - 2, 0)},{'' if high is None else high - 2}}}"
    body = f"{_EDGE}{inner}{_EDGE}" if low >= 2 else f"{_EDGE}(?:{inner}{_EDGE})?"
    return body if low >= 1 else f"(?:{body})?"


def _sign(column: Column, *, canonical: bool) -> str | None:
    if column.minimum is None:
        return "-?" if canonical else "[+-]?"
    if column.minimum == 0:
        return "" if canonical else r"\+?"
    return None


def _number(column: Column) -> str | None:
    if column.maximum is not None or not column.number_syntax.is_default:
        return None
    sign = _sign(column, canonical=False)
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


def _integer(column: Column, *, key: bool) -> str | None:
    if not column.number_syntax.is_default:
        return None
    digits = (
        _MAX_INT_DIGITS
        if column.maximum is None
        else min(_MAX_INT_DIGITS, len(str(column.maximum)) - 1)
    )
    sign = _sign(column, canonical=key)
    if sign is None or digits < 1 or (column.maximum is not None and column.maximum < 0):
        return None
    if key:  # one spelling per value: no plus sign, no leading zeros, no "-0"
        return rf"(?:0|{sign}[1-9][0-9]{{0,{digits - 1}}})"
    return rf"{sign}[0-9]{{1,{digits}}}"


def _unbounded(pattern: str) -> Callable[[Column], str | None]:
    return lambda column: (
        pattern
        if column.minimum is None and column.maximum is None and column.format == "default"
        else None
    )


_BUILDERS: dict[FieldType, Callable[[Column], str | None]] = {
    FieldType.number: _number,
    FieldType.date: _unbounded(_DATE),
    FieldType.datetime: _unbounded(rf"{_DATE}(?:[T ]{_TIME}{_OFFSET}?)?"),
    FieldType.time: _unbounded(_TIME),
    FieldType.year: _unbounded("[0-9]{4}"),
}


def _base_pattern(column: Column, *, key: bool, empty_is_value: bool) -> str | None:
    if column.pattern is not None or column.enum is not None:
        return None
    if column.type is FieldType.string:
        return _text(column, empty_is_value=empty_is_value)
    if column.type is FieldType.integer:
        return _integer(column, key=key)
    if column.type is FieldType.boolean:
        default = (column.true_values, column.false_values) == (DEFAULT_TRUE, DEFAULT_FALSE)
        return _BOOLEAN if default else None
    builder = _BUILDERS.get(column.type)
    return None if builder is None else builder(column)


def cell_pattern(column: Column, *, key: bool = False, null: str = "") -> str | None:
    """The fast pattern of one cell of ``column``. With COPY's NULL marker '' (an empty
    cell is missing), an empty cell matches only if the field is optional; with ``\\N``
    an empty cell is an empty string, valid only where the field accepts one."""
    empty_is_value = null != "" and column.type is FieldType.string
    pattern = _base_pattern(column, key=key, empty_is_value=empty_is_value)
    if pattern is None:
        return None
    tokens = [re.escape(token) for token in column.missing_values if token]
    if tokens:  # a missing-value token is NULL, never a value: leave those to the field
        pattern = rf"(?!(?:{'|'.join(tokens)})(?:\t|\Z)){pattern}"
    if null == "" and not column.required:
        return f"(?:{pattern})?"
    return pattern


class RowCheck:
    """Checks whole rows (tab-joined lines) at once, then single cells of the rows that fail."""

    def __init__(
        self, columns: Sequence[Column], *, null: str = "", keys: Sequence[str] = ()
    ) -> None:
        patterns = [cell_pattern(column, key=column.name in keys, null=null) for column in columns]
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
