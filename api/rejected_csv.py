"""Rejected rows as a CSV download: the original columns, then where and why.

One line per rejected row (a row with several bad cells lists them all), built from the
row's stored raw fields. Every cell is neutralised against spreadsheet formula injection
(OWASP "CSV Injection"): a cell starting with = + - @ (or their full-width forms
U+FF1D, U+FF0B, U+FF0D, U+FF20, which some spreadsheets also read as formulas), tab, CR or
LF, or with whitespace before any of them, gets a leading apostrophe, so a spreadsheet shows
it as text instead of evaluating it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from itertools import groupby

from core.models import ImportRowError

FORMULA_STARTS = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")
CONTROL_STARTS = ("\t", "\r", "\n")
ERROR_COLUMNS = ("error_row", "error_column", "error_message")
_FLUSH_LINES = 500


def neutralise(cell: str) -> str:
    if cell.startswith(CONTROL_STARTS) or cell.lstrip().startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def _line(row: int, errors: list[ImportRowError], width: int) -> list[str]:
    raw = next((error.raw for error in errors if error.raw is not None), None)
    original = list(raw) if raw is not None else [""] * width
    columns = list(dict.fromkeys(error.column for error in errors if error.column))
    messages = [f"{e.column}: {e.message}" if e.column else e.message for e in errors]
    return [*original, str(row), "; ".join(columns), "; ".join(messages)]


def render(errors: Iterable[ImportRowError], header: Sequence[str]) -> Iterator[bytes]:
    """CSV bytes, a few hundred lines at a time; ``errors`` must be ordered by row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([neutralise(name) for name in [*header, *ERROR_COLUMNS]])
    for count, (row, group) in enumerate(groupby(errors, key=lambda error: error.row), 1):
        writer.writerow([neutralise(cell) for cell in _line(row, list(group), len(header))])
        if count % _FLUSH_LINES == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()
