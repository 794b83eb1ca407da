"""What one batch will load: duplicate keys resolved, and the COPY payload. Pure.

Duplicate keys inside a batch are resolved here so the database sees each key once (an
``INSERT ... ON CONFLICT DO UPDATE`` may not touch a row twice). ``upsert``: the last row of a
key wins and the earlier ones count as ``updated`` (each was overwritten by a later row of the
file), exactly as if rows were applied one by one. ``insert``: the first row wins and the
later ones are rejected as ``duplicate_key``. Across batches the database does the same.
An importer without a primaryKey (insert only) keeps every row.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from core.imports.row_errors import RowError, RowErrorCode
from jobs.imports.row_validation import CheckedBatch

Key = str | tuple[str, ...]


@dataclass
class LoadPlan:
    rows: list[list[str]]
    row_numbers: Sequence[int]
    keys: list[Key]
    originals: dict[int, list[str]]  # index in rows -> fields as read, if the model changed them
    payload: bytes  # the rows in COPY text format, NULL ''
    superseded: int = 0  # upsert: rows overwritten by a later row of the same key
    duplicates: list[RowError] = field(default_factory=list)  # insert: later rows of a key

    def original(self, index: int) -> list[str]:
        return self.originals.get(index, self.rows[index])


def copy_payload(lines: list[str]) -> bytes:
    """COPY text format: the rows' lines (already escaped), one per row."""
    return ("\n".join(lines) + "\n").encode() if lines else b""


def plan_batch(
    checked: CheckedBatch,
    *,
    key_positions: Sequence[int],
    key_names: Sequence[str],
    mode: Literal["upsert", "insert"],
) -> LoadPlan:
    rows, numbers, originals = checked.rows, checked.row_numbers, checked.originals
    lines = checked.lines
    if not key_positions:  # an insert-only importer without a key: every row is its own
        return LoadPlan(rows, numbers, [], originals, copy_payload(lines))
    getter = operator.itemgetter(*key_positions)
    keys: list[Key] = list(map(getter, rows))
    count = len(keys)
    if mode == "upsert":
        winners = dict(zip(keys, range(count), strict=True))  # the last index of each key
    else:
        winners = dict(zip(reversed(keys), range(count - 1, -1, -1), strict=True))  # the first
    if len(winners) == count:
        return LoadPlan(rows, numbers, keys, originals, copy_payload(lines))
    keep = sorted(winners.values())
    duplicates: list[RowError] = []
    if mode == "insert":
        kept = set(keep)
        for index in range(count):
            if index not in kept:
                first = numbers[winners[keys[index]]]
                duplicates.append(
                    duplicate_key_error(
                        numbers[index], key_names, keys[index], checked.original(index), first
                    )
                )
    plan_rows = [rows[index] for index in keep]
    plan_originals = {new: originals[old] for new, old in enumerate(keep) if old in originals}
    return LoadPlan(
        rows=plan_rows,
        row_numbers=[numbers[index] for index in keep],
        keys=[keys[index] for index in keep],
        originals=plan_originals,
        payload=copy_payload([lines[index] for index in keep]),
        superseded=count - len(keep) if mode == "upsert" else 0,
        duplicates=duplicates,
    )


def duplicate_key_error(
    row: int, key_names: Sequence[str], key: Key, raw: Sequence[str], first_row: int | None = None
) -> RowError:
    shown = key if isinstance(key, str) else ", ".join(key)
    where = f"row {first_row} of this file" if first_row is not None else "the table"
    return RowError(
        row,
        ", ".join(key_names),
        RowErrorCode.duplicate_key,
        f"{', '.join(key_names)} {shown!r} already exists in {where} (mode insert).",
        shown,
        raw,
    )


def not_unique_error(row: int, name: str, raw: Sequence[str]) -> RowError:
    """A row whose unique field ``name`` holds a value an earlier row or the table has."""
    return RowError(
        row,
        name,
        RowErrorCode.not_unique,
        f"{name} must be unique; this value is already taken (by an earlier row of the file "
        "or a row of the table).",
        None,
        raw,
    )
