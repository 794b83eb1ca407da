"""Deterministic products CSVs for tests and benchmarks: row ``i`` is always the same row.

Wrinkles, each at a fixed rhythm: quoted multi-line descriptions (every 7th row unless told
otherwise), rows with an invalid price (rejected), rows repeating an earlier sku (the last
one wins).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

HEADER = ["sku", "name", "description", "price", "quantity", "category", "updated_at"]
CATEGORIES = ["tools", "garden", "kitchen", "toys", "books", "office"]


def product_row(
    i: int, *, bad_every: int = 0, repeat_every: int = 0, multiline_every: int = 7
) -> list[str]:
    sku = i - 5 if repeat_every and i >= 5 and i % repeat_every == 0 else i
    description = f'Fine product {i}, with a comma and "quotes"'
    if multiline_every and i % multiline_every == 0:
        description += "\nand a second line"
    price = "-1.00" if bad_every and i % bad_every == 0 else f"{(i * 7919) % 100_000 / 100:.2f}"
    return [
        f"SKU-{sku:08d}",
        f"Product {i}",
        description,
        price,
        str((i * 31) % 5_000),
        CATEGORIES[i % len(CATEGORIES)],
        f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
    ]


def csv_chunks(rows: int, *, chunk_rows: int = 10_000, **wrinkles: int) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for i in range(rows):
        writer.writerow(product_row(i, **wrinkles))
        if (i + 1) % chunk_rows == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def products_csv(rows: int, **wrinkles: int) -> bytes:
    return b"".join(csv_chunks(rows, **wrinkles))


def write_products_csv(path: Path, rows: int, **wrinkles: int) -> Path:
    with path.open("wb") as file:
        for chunk in csv_chunks(rows, **wrinkles):
            file.write(chunk)
    return path
