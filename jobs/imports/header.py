"""Matching a CSV header to an importer's columns (case- and whitespace-insensitive)."""

from __future__ import annotations

from collections import Counter

from core.imports.failures import ImportFailed
from core.imports.failures import ImportFailureCode as Failure
from core.imports.importer import Column, Importer, normalise_header


def match_header(fields: list[str], importer: Importer, *, row: int) -> tuple[Column, ...]:
    """The importer column of each header field, in file order; fails the import on a
    duplicate, unknown or missing required column."""
    names = [normalise_header(name) for name in fields]
    known = {column.name: column for column in importer.columns}
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ImportFailed(
            Failure.duplicate_header,
            f"Row {row}: column(s) {', '.join(map(repr, duplicates))} appear more than once.",
            where={"row": row, "columns": duplicates},
        )
    unknown = [field for field, name in zip(fields, names, strict=True) if name not in known]
    if unknown:
        raise ImportFailed(
            Failure.unknown_header,
            f"Row {row}: unknown column(s) {', '.join(map(repr, unknown))} for importer "
            f"{importer.name!r}; its columns are {', '.join(known)}.",
            where={"row": row, "columns": unknown},
        )
    missing = [name for name in importer.required_columns if name not in names]
    if missing:
        raise ImportFailed(
            Failure.missing_column,
            f"Row {row}: required column(s) {', '.join(map(repr, missing))} are missing.",
            where={"row": row, "columns": missing},
        )
    return tuple(known[name] for name in names)
