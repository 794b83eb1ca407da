"""Matching a CSV header to an importer's fields: case- and whitespace-insensitive, through
the declaration's aliases too."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from core.imports.failures import ImportFailed
from core.imports.failures import ImportFailureCode as Failure
from core.imports.field_types import Column
from core.imports.importer import Importer, normalise_header

SHOWN_NAMES = 20  # a header of 10,000 unknown names must not make a 10,000-name message


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(map(repr, names[:SHOWN_NAMES]))
    return shown + (f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else "")


def match_header(fields: list[str], importer: Importer, *, row: int) -> tuple[Column, ...]:
    """The importer column of each header field, in file order; fails the import on a
    duplicate, unknown or missing required column."""
    names = [importer.headers.get(normalise_header(name), "") for name in fields]
    unknown = [field for field, name in zip(fields, names, strict=True) if not name]
    if unknown:
        raise ImportFailed(
            Failure.unknown_header,
            f"Row {row}: unknown column(s) {_names(unknown)} for importer {importer.name!r}; "
            f"its columns are {_names([column.name for column in importer.columns])}.",
            where={"row": row, "columns": unknown[:SHOWN_NAMES]},
        )
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ImportFailed(
            Failure.duplicate_header,
            f"Row {row}: column(s) {_names(duplicates)} appear more than once.",
            where={"row": row, "columns": duplicates[:SHOWN_NAMES]},
        )
    missing = [name for name in importer.required_columns if name not in names]
    if missing:
        raise ImportFailed(
            Failure.missing_column,
            f"Row {row}: required column(s) {_names(missing)} are missing.",
            where={"row": row, "columns": missing[:SHOWN_NAMES]},
        )
    return tuple(importer.column(name) for name in names)
