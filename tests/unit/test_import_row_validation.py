"""Row validation: fast checks never accept what the row model would reject or change, and
errors carry row, column and a stable code."""

from __future__ import annotations

import random
import re
import string

import pytest

from core.imports.row_errors import RowErrorCode
from jobs.imports.batch_plan import plan_batch
from jobs.imports.fast_checks import RowCheck, cell_pattern
from jobs.imports.row_validation import CellError, RowValidator, escape_copy_text, judge_cell
from tests.declared import PRODUCTS

HEADER = ["sku", "name", "description", "price", "quantity", "category", "updated_at"]
COLUMNS = [PRODUCTS.column(name) for name in HEADER]

ODD_VALUES = [
    "",
    " ",
    "0",
    "-0",
    "+5",
    "007",
    "1_000",
    "1e3",
    "1E+3",
    "12.",
    ".5",
    "12.345",
    "12.500",
    "99999999999",
    "9999999999.99",
    "NaN",
    "inf",
    "-1",
    "٣",
    "2024-01-01",
    "2024-02-29",
    "2023-02-29",
    "2024-01-01T10:00",
    "2024-01-01 10:00:00.123456+01:00",
    "2024-01-01T25:00",
    "1700000000",
    "2024-01-01Z",
    "2024-13-01",
    "0000-01-01",
    " a ",
    "a\tb",
    "a\\b",
    "x" * 300,
    "\u00a0a",
    "a\u3000",
    "ab\x00",
    "line\nbreak",
    "=1+1",
    "true",
]


@pytest.mark.parametrize("column", COLUMNS, ids=HEADER)
def test_fast_check_accepts_only_values_the_model_accepts_as_they_are(column):
    """The fast path may reject valid values (the model then decides) but must never accept
    one the model rejects, and what it accepts is loaded as written: the same text for
    strings, the same value for numbers and dates."""
    pattern = cell_pattern(column)
    assert pattern is not None
    check = re.compile(pattern)
    rng = random.Random(7)
    alphabet = string.printable + "éü€\u00a0\u3000"
    values = ODD_VALUES + ["".join(rng.choices(alphabet, k=rng.randint(0, 12))) for _ in range(500)]
    for value in values:
        if not check.fullmatch(value):
            continue
        canonical = judge_cell(column, value)
        assert not isinstance(canonical, CellError), (column.name, value, canonical)
        if canonical is None:
            assert value == ""  # only an empty cell is missing here
        elif column.type == "string":
            assert canonical == value
        else:
            assert column.parse(canonical) == column.parse(value), (column.name, value)


def test_row_check_flags_rows_to_look_at_cell_by_cell():
    check = RowCheck(COLUMNS)
    good = "A\tAlpha\t\t1.00\t1\t\t2024-01-01"
    lines = [
        good,
        good.replace("Alpha", "Al\tpha"),  # a tab inside a cell shifts the columns
        good.replace("Alpha", "Al\x00pha"),
        good.replace("Alpha", "two\nlines"),  # fine (COPY escaping is done per line)
        good.replace("1.00", "-1"),
    ]
    assert check.suspects(lines) == [1, 2, 4]
    assert check.cell_passes(0, "A")
    assert not check.cell_passes(0, " A")


@pytest.mark.parametrize(
    ("column", "value", "code"),
    [
        ("sku", "", RowErrorCode.required),
        ("sku", "   ", RowErrorCode.required),
        ("sku", "x" * 65, RowErrorCode.too_long),
        ("name", "a\x00b", RowErrorCode.nul_byte),
        ("price", "-0.01", RowErrorCode.out_of_range),
        ("price", "abc", RowErrorCode.invalid_value),
        ("price", "1.234", RowErrorCode.invalid_value),
        ("quantity", "1.5", RowErrorCode.invalid_value),
        ("quantity", "-3", RowErrorCode.out_of_range),
        ("quantity", "3000000000", RowErrorCode.out_of_range),
        ("updated_at", "yesterday", RowErrorCode.invalid_value),
        ("updated_at", "2023-02-29", RowErrorCode.invalid_value),
    ],
)
def test_invalid_cells(column, value, code):
    verdict = judge_cell(PRODUCTS.column(column), value)
    assert isinstance(verdict, CellError)
    assert verdict.code is code


@pytest.mark.parametrize(
    ("column", "value", "canonical"),
    [
        ("sku", "  A-1 ", "A-1"),
        ("description", "   ", None),
        ("price", " 12.5 ", "12.5"),
        ("price", "1e3", "1000"),
        ("quantity", "+7", "7"),
        ("updated_at", "2024-02-29", "2024-02-29T00:00:00"),
        ("updated_at", " 2024-01-01T10:00:00Z ", "2024-01-01T10:00:00+00:00"),
    ],
)
def test_valid_cells_become_canonical_text(column, value, canonical):
    assert judge_cell(PRODUCTS.column(column), value) == canonical


def test_batch_errors_have_row_and_column_and_blank_rows_are_skipped():
    rows = [
        ["A", "Alpha", "", "1.00", "1", "", ""],
        ["B", "", "", "-1", "x", "", ""],
        ["", "", "", "", "", "", ""],
        [" C ", "Gamma", "multi\nline", "2", "", "", "2024-02-29"],
    ]
    checked = RowValidator(COLUMNS).check(rows, [2, 3, 4, 5])
    assert [(e.row, e.column, e.code) for e in checked.errors] == [
        (3, "name", RowErrorCode.required),
        (3, "price", RowErrorCode.out_of_range),
        (3, "quantity", RowErrorCode.invalid_value),
    ]
    assert checked.errors[0].raw == rows[1]
    assert (checked.rejected, checked.blank) == (1, 1)
    assert checked.row_numbers == [2, 5]
    assert checked.rows[1] == ["C", "Gamma", "multi\nline", "2", "", "", "2024-02-29T00:00:00"]
    assert checked.original(1) == rows[3]


def test_lines_are_escaped_for_copy_only_where_needed():
    rows = [
        ["A", "plain", "", "", "", "", ""],
        ["B", "n", "tab\there\nand\\slash", "", "", "", ""],  # a tab: checked cell by cell
        ["C", "n", "new\nline\rand \\ back", "", "", "", ""],  # fast path, escaped per line
    ]
    checked = RowValidator(COLUMNS).check(rows, [2, 3, 4])
    assert checked.lines == [
        "A\tplain\t\t\t\t\t",
        "B\tn\ttab\\there\\nand\\\\slash\t\t\t\t",
        "C\tn\tnew\\nline\\rand \\\\ back\t\t\t\t",
    ]
    assert checked.rows == rows
    assert escape_copy_text("a\rb") == "a\\rb"


def _checked(keys):
    rows = [[key, f"name {i}", "", "", "", "", ""] for i, key in enumerate(keys)]
    return RowValidator(COLUMNS).check(rows, list(range(2, 2 + len(rows))))


def test_upsert_plan_keeps_the_last_row_of_a_key():
    plan = plan_batch(
        _checked(["A", "B", "A", "A"]), key_positions=[0], key_names=["sku"], mode="upsert"
    )
    assert plan.keys == ["B", "A"]
    assert list(plan.row_numbers) == [3, 5]
    assert plan.rows[1][1] == "name 3"
    assert (plan.superseded, plan.duplicates) == (2, [])


def test_insert_plan_keeps_the_first_row_and_rejects_the_rest():
    plan = plan_batch(
        _checked(["A", "B", "A"]), key_positions=[0], key_names=["sku"], mode="insert"
    )
    assert plan.keys == ["A", "B"]
    assert plan.superseded == 0
    assert [(e.row, e.column, e.code) for e in plan.duplicates] == [
        (4, "sku", RowErrorCode.duplicate_key)
    ]
    assert "row 2" in plan.duplicates[0].message
