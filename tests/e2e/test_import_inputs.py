"""Messy real-world CSVs through the real API and a real worker, each with its exact outcome:
the rows loaded, the rows rejected (row, column, code), or the job failed with its code.
Never a 500, never a stuck job."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest

from core import db
from tests import services
from tests.conftest import settings_env
from tests.e2e.import_support import (
    ImportPlatform,
    clean_imports,
    import_settings,
    running_import_platform,
)

pytestmark = pytest.mark.e2e

TEN_MB = 10 * 1024 * 1024


@dataclass(frozen=True)
class Case:
    data: bytes
    form: dict[str, Any] = field(default_factory=dict)
    loaded: dict[str, dict[str, Any]] | set[str] = field(default_factory=set)
    rejected: list[tuple[int, str | None, str]] = field(default_factory=list)
    failed: str | None = None  # the job's error code
    counts: dict[str, int] = field(default_factory=dict)  # extra result counts to check


CASES: dict[str, Case] = {
    "utf8_bom": Case(
        "\ufeffsku,name,price\nB1,Bommed,1.00\n".encode(),
        loaded={"B1": {"name": "Bommed", "price": Decimal("1.00")}},
    ),
    "crlf_line_endings": Case(b"sku,name\r\nC1,a\r\nC2,b\r\n", loaded={"C1", "C2"}),
    "quoted_newlines_delimiters_and_quotes": Case(
        b'sku,name,description\nQ1,"multi\nline","with, comma and ""quotes"""\nQ2,plain,\nQ3,,x\n',
        loaded={
            "Q1": {"name": "multi\nline", "description": 'with, comma and "quotes"'},
            "Q2": {"description": None},
        },
        rejected=[(4, "name", "required")],  # a quoted newline does not shift row numbers
    ),
    "ragged_rows": Case(
        b"sku,name,price\nR1,a,1\nR2,b\nR3,c,3,extra\nR4,d,4\n",
        loaded={"R1", "R4"},
        rejected=[(3, None, "wrong_field_count"), (4, None, "wrong_field_count")],
    ),
    "wrong_types": Case(
        b"sku,name,price,quantity,updated_at\nT1,a,abc,1,2024-01-01\n"
        b"T2,b,1.5,x,yesterday\nT3,c,2.50,3,2024-02-29T10:00:00+02:00\n",
        loaded={"T3": {"price": Decimal("2.50"), "quantity": 3}},
        rejected=[
            (2, "price", "invalid_value"),
            (3, "quantity", "invalid_value"),
            (3, "updated_at", "invalid_value"),
        ],
    ),
    "negative_price": Case(
        b"sku,name,price,quantity\nN1,a,-1.00,1\nN2,b,0,0\nN3,c,1,-5\n",
        loaded={"N2"},
        rejected=[(2, "price", "out_of_range"), (4, "quantity", "out_of_range")],
    ),
    "too_many_decimals_and_long_sku": Case(
        b"sku,name,price\nP1,a,1.999\n" + b"P" * 65 + b",b,1\n",
        rejected=[(2, "price", "invalid_value"), (3, "sku", "too_long")],
    ),
    "missing_required_column": Case(b"sku,price\nM1,1\n", failed="missing_column"),
    "no_header_line": Case(b"A1,Widget,1.00\nA2,Gadget,2.00\n", failed="unknown_header"),
    "duplicate_header": Case(b"sku,name,SKU\nD1,a,b\n", failed="duplicate_header"),
    "unknown_header": Case(b"sku,name,colour\nU1,a,red\n", failed="unknown_header"),
    "empty_file": Case(b"", failed="empty_file"),
    "only_blank_lines": Case(b"\r\n\n  \n", failed="empty_file"),
    "header_only": Case(b"sku,name,price\n", counts={"rows_total": 0, "inserted": 0}),
    "latin1_without_encoding": Case(b"sku,name\nL1,caf\xe9\n", failed="undecodable"),
    "latin1_with_encoding": Case(
        b"sku,name\nL1,caf\xe9\n", form={"encoding": "latin-1"}, loaded={"L1": {"name": "café"}}
    ),
    "utf16_file": Case("sku,name\nW1,a\n".encode("utf-16"), failed="undecodable"),
    "nul_byte_in_a_row": Case(
        b"sku,name\nZ1,ok\nZ2,bad\x00name\n", loaded={"Z1"}, rejected=[(3, "name", "nul_byte")]
    ),
    "binary_upload": Case(b"\x89PNG\r\n\x1a\n" + os.urandom(4096), failed="not_csv"),
    "random_bytes": Case(bytes(range(256)) * 64, failed="not_csv"),
    "xlsx_workbook": Case(b"PK\x03\x04" + bytes(300), failed="not_csv"),
    "ten_mb_single_field": Case(
        b"sku,name,description\nF1,big," + b"x" * TEN_MB + b"\nF2,small,ok\n",
        loaded={"F2"},
        rejected=[(2, "description", "too_long")],
    ),
    "semicolon_sniffed": Case(
        b"sku;name;price\nS1;a;1.50\nS2;b;\n", loaded={"S1": {"price": Decimal("1.50")}, "S2": {}}
    ),
    "tab_delimiter_given": Case(
        b"sku\tname\nTB1\ta b\n", form={"delimiter": "tab"}, loaded={"TB1": {"name": "a b"}}
    ),
    "case_and_whitespace_insensitive_headers": Case(
        b" SKU ,NAME, Updated At \nH1,a,2024-01-01\n", loaded={"H1": {"name": "a"}}
    ),
    "values_are_trimmed": Case(
        b"sku,name,price\n  W1 , Name ,  12.50  \n",
        loaded={"W1": {"name": "Name", "price": Decimal("12.50")}},
    ),
    "blank_lines_skipped_but_counted_as_rows": Case(
        b"sku,name\n\nB1,a\n\n\nB2,b\n,\nB3,\n",
        loaded={"B1", "B2"},
        rejected=[(8, "name", "required")],
        counts={"rows_total": 3},
    ),
    "duplicate_keys_last_wins": Case(
        b"sku,name\nK1,first\nK2,x\nK1,second\nK1,third\n",
        loaded={"K1": {"name": "third"}, "K2": {}},
        counts={"rows_total": 4, "inserted": 2, "updated": 2},
    ),
    "unclosed_quote": Case(
        b'sku,name\nU1,"open\nU2,b\n',
        rejected=[(2, None, "malformed_row")],
        counts={"rows_total": 1},
    ),
    "text_after_closing_quote": Case(
        b'sku,name\nX1,"a"b\nX2,c\n', loaded={"X2"}, rejected=[(2, None, "malformed_row")]
    ),
    "formula_cells_load_as_text": Case(b"sku,name\n=1+1,@cmd\n", loaded={"=1+1": {"name": "@cmd"}}),
}


@pytest.fixture(scope="module")
def imports(database_url, session_redis, engine, tmp_path_factory) -> Iterator[ImportPlatform]:
    tmp = tmp_path_factory.mktemp("import-inputs")
    settings = import_settings(database_url, session_redis, tmp / "storage")
    yield from running_import_platform(settings, engine, tmp / "logs")


@pytest.mark.parametrize("name", list(CASES))
def test_input(imports: ImportPlatform, name: str) -> None:
    case = CASES[name]
    clean_imports(imports.sessions)
    job = imports.run(case.data, **case.form)

    if case.failed:
        assert job["status"] == "failed", job
        assert job["error"]["code"] == case.failed, job["error"]
        assert imports.products() == {}
        return
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert imports.errors(job["id"]) == case.rejected
    rejected_rows = len({row for row, _, _ in case.rejected})
    assert result["rejected"] == rejected_rows
    assert result["rows_total"] == result["valid"] + result["rejected"]
    assert result["inserted"] + result["updated"] == result["valid"]
    for counter, expected in case.counts.items():
        assert result[counter] == expected, (counter, result)
    products = imports.products()
    assert set(products) == set(case.loaded)
    if isinstance(case.loaded, dict):
        for sku, values in case.loaded.items():
            for column, value in values.items():
                assert products[sku][column] == value, (sku, column)


def _multipart_chunks(csv_bytes: bytes) -> Iterator[bytes]:
    """A multipart body sent chunked (no Content-Length), as a streaming client would."""
    boundary = b"--xyz"
    yield boundary + b'\r\nContent-Disposition: form-data; name="importer"\r\n\r\n'
    yield b"products\r\n" + boundary
    yield b'\r\nContent-Disposition: form-data; name="file"; filename="x.csv"\r\n\r\n'
    yield csv_bytes
    yield b"\r\n" + boundary + b"--\r\n"


def test_upload_over_the_size_cap_is_413(database_url, session_redis, engine, tmp_path) -> None:
    settings = import_settings(
        database_url, session_redis, tmp_path / "storage", max_upload_bytes=1000
    )
    key = services.new_api_key(db.make_sessionmaker(engine), settings)
    big = b"sku,name\n" + b"A,b\n" * 1000
    with services.platform(settings_env(settings), tmp_path) as platform:
        platform.start_api()
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=platform.api_url or "", headers=headers) as client:
            declared = client.post(
                "/v1/imports", data={"importer": "products"}, files={"file": ("x.csv", big)}
            )
            chunked = client.post(
                "/v1/imports",
                content=_multipart_chunks(big),
                headers={"Content-Type": "multipart/form-data; boundary=xyz"},
            )
            small = client.post(
                "/v1/imports",
                data={"importer": "products"},
                files={"file": ("x.csv", b"sku,name\nA,b\n")},
            )
    for refused in (declared, chunked):  # refused by Content-Length, and while receiving
        assert refused.status_code == 413, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "payload_too_large"
    assert small.status_code == 202, small.text
    assert list((tmp_path / "storage" / "uploads" / "incoming").iterdir()) == []
