"""The rejected-rows CSV: one line per row, formula-like cells neutralised."""

from __future__ import annotations

import csv
import io

import pytest

from api.rejected_csv import neutralise, render
from core.models import ImportRowError


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("\n=cmd", "'\n=cmd"),
        ("\ncmd", "'\ncmd"),
        ("  =1+1", "'  =1+1"),
        (" \u3000@x", "' \u3000@x"),
        ("\uff1d1+1", "'\uff1d1+1"),
        ("\uff0b1", "'\uff0b1"),
        ("\uff0d1", "'\uff0d1"),
        ("\uff20SUM(A1)", "'\uff20SUM(A1)"),
        (" plain", " plain"),
        ("plain", "plain"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_neutralise(cell, shown):
    assert neutralise(cell) == shown


def _error(row, column, message, raw=None):
    return ImportRowError(
        row=row, column=column, code="invalid_value", message=message, value=None, raw=raw
    )


def test_render_groups_errors_by_row_and_neutralises_every_cell():
    errors = [
        _error(3, "price", "bad", raw=["A", "=cmd()", "-1"]),
        _error(3, "quantity", "worse"),
        _error(7, None, "Malformed CSV"),
    ]
    text = b"".join(render(errors, ["sku", "name", "price"])).decode()
    lines = list(csv.reader(io.StringIO(text)))
    assert lines == [
        ["sku", "name", "price", "error_row", "error_column", "error_message"],
        ["A", "'=cmd()", "'-1", "3", "price; quantity", "price: bad; quantity: worse"],
        ["", "", "", "7", "", "Malformed CSV"],
    ]
