"""A deterministic 30-column CSV and its declaration, for benchmarks and tests: row ``i`` is
always the same row. Strings, integers, numbers, dates, date-times and booleans."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STRINGS = [f"s{n}" for n in range(11)]
INTEGERS = [f"i{n}" for n in range(6)]
NUMBERS = [f"n{n}" for n in range(6)]
DATES = ["d0", "d1", "d2"]
DATETIMES = ["t0", "t1"]
BOOLEANS = ["b0", "b1"]
HEADER = ["id", *STRINGS[1:], *INTEGERS, *NUMBERS, *DATES, *DATETIMES, *BOOLEANS]


def declaration(table: str = "wide") -> dict[str, Any]:
    fields: list[dict[str, Any]] = [
        {"name": "id", "constraints": {"required": True, "maxLength": 32}}
    ]
    fields += [{"name": n, "constraints": {"maxLength": 100}} for n in STRINGS[1:]]
    fields += [{"name": n, "type": "integer", "constraints": {"minimum": 0}} for n in INTEGERS]
    fields += [
        {"name": n, "type": "number", "decimalPlaces": 2, "maxDigits": 14} for n in NUMBERS[:3]
    ]
    fields += [{"name": n, "type": "number"} for n in NUMBERS[3:]]
    fields += [{"name": n, "type": "date"} for n in DATES]
    fields += [{"name": n, "type": "datetime"} for n in DATETIMES]
    fields += [{"name": n, "type": "boolean"} for n in BOOLEANS]
    assert len(fields) == 30
    return {
        "table": table,
        "roles": ["submitter"],
        "schema": {"fields": fields, "primaryKey": ["id"]},
    }


def wide_row(i: int) -> list[str]:
    return [
        f"W{i:010d}",
        *[f"text {k} of row {i}" for k in range(1, 11)],
        *[str((i * (k + 3)) % 100_000) for k in range(6)],
        *[f"{(i * (k + 7)) % 1_000_000 / 100:.2f}" for k in range(3)],
        *[f"{(i * (k + 11)) % 10_000 / 7:.4f}" for k in range(3)],
        *[
            f"20{10 + (i + k) % 15}-{1 + (i + k) % 12:02d}-{1 + (i * 3 + k) % 28:02d}"
            for k in range(3)
        ],
        *[f"2026-01-{1 + (i + k) % 28:02d}T{i % 24:02d}:{(i + k) % 60:02d}:00Z" for k in range(2)],
        "true" if i % 2 else "false",
        "1" if i % 3 else "0",
    ]


def csv_chunks(rows: int, *, chunk_rows: int = 10_000) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for i in range(rows):
        writer.writerow(wide_row(i))
        if (i + 1) % chunk_rows == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def write_wide_csv(path: Path, rows: int) -> Path:
    with path.open("wb") as file:
        for chunk in csv_chunks(rows):
            file.write(chunk)
    return path
