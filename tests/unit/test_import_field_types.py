"""Every Table Schema type and constraint, accepted and rejected at row level with its code;
and the fast path never accepts what the field would reject or change."""

from __future__ import annotations

import random
import re
import string

import pytest

from core.imports.declaration import KEY_TYPES
from core.imports.field_types import FieldType
from core.imports.row_errors import RowErrorCode as Code
from jobs.imports.fast_checks import cell_pattern
from jobs.imports.row_validation import CellError, RowValidator, judge_cell
from tests.declared import declared

FIELDS = [
    {"name": "s", "type": "string"},
    {"name": "email", "type": "string", "format": "email"},
    {"name": "uri", "type": "string", "format": "uri"},
    {"name": "uuid", "type": "string", "format": "uuid"},
    {"name": "bin", "type": "string", "format": "binary"},
    {"name": "n", "type": "number"},
    {"name": "money", "type": "number", "decimalPlaces": 2, "maxDigits": 6},
    {"name": "eu", "type": "number", "decimalChar": ",", "groupChar": "."},
    {"name": "price", "type": "number", "bareNumber": False},
    {"name": "i", "type": "integer"},
    {"name": "b", "type": "boolean"},
    {"name": "yn", "type": "boolean", "trueValues": ["Y"], "falseValues": ["N"]},
    {"name": "d", "type": "date"},
    {"name": "d_fmt", "type": "date", "format": "%d/%m/%Y"},
    {"name": "d_any", "type": "date", "format": "any"},
    {"name": "dt", "type": "datetime"},
    {"name": "t", "type": "time"},
    {"name": "y", "type": "year"},
    {"name": "o", "type": "object"},
    {"name": "a", "type": "array"},
    {"name": "req", "constraints": {"required": True}},
    {"name": "short", "constraints": {"minLength": 2, "maxLength": 3}},
    {"name": "code", "constraints": {"pattern": "[A-Z]{2}[0-9]+"}},
    {"name": "colour", "constraints": {"enum": ["red", "green"]}},
    {"name": "level", "type": "integer", "constraints": {"enum": [1, 2, 3]}},
    {"name": "pct", "type": "number", "constraints": {"minimum": 0, "maximum": 100}},
    {"name": "when", "type": "date", "constraints": {"minimum": "2020-01-01"}},
    {"name": "at", "type": "datetime", "constraints": {"maximum": "2030-01-01T00:00:00Z"}},
    {"name": "tags", "type": "array", "constraints": {"minLength": 1, "maxLength": 2}},
]
IMPORTER = declared(table="t", schema={"fields": FIELDS})
NA = declared(table="t", schema={"fields": FIELDS, "missingValues": ["", "NA"]})
KEEP_EMPTY = declared(table="t", schema={"fields": FIELDS, "missingValues": []})

VALID = [
    ("s", "  any text ", "  any text "),  # strings are kept as written (no trimWhitespace)
    ("email", "a.b@example.com", "a.b@example.com"),
    ("uri", "https://example.com/x?y=1", "https://example.com/x?y=1"),
    ("uuid", "6BA7B810-9DAD-11D1-80B4-00C04FD430C8", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
    ("bin", "aGk=", "\\x6869"),
    ("n", "1.5E3", "1500"),
    ("n", " -0.25 ", "-0.25"),
    ("n", "NaN", "NaN"),
    ("n", "INF", "Infinity"),
    ("n", "-INF", "-Infinity"),
    ("money", "12.500", "12.500"),  # trailing zeros are not decimal places
    ("eu", "1.234,5", "1234.5"),
    ("price", "€95.00", "95.00"),
    ("price", "12%", "12"),
    ("i", "-42", "-42"),
    ("i", "007", "7"),
    ("b", "TRUE", "true"),
    ("b", "0", "false"),
    ("yn", "Y", "true"),
    ("d", "2024-02-29", "2024-02-29"),
    ("d_fmt", "31/12/2024", "2024-12-31"),
    ("d_any", "2024/03/01", "2024-03-01"),
    ("d_any", "1 Mar 2024", "2024-03-01"),
    ("dt", "2024-01-01T10:00:00Z", "2024-01-01T10:00:00+00:00"),
    ("dt", "2024-01-01 10:00", "2024-01-01T10:00:00"),
    ("dt", "2024-01-01", "2024-01-01T00:00:00"),
    ("t", "23:59:59.5", "23:59:59.500000"),
    ("y", "1999", "1999"),
    ("o", '{"a": [1, "é"]}', '{"a":[1,"é"]}'),
    ("a", "[]", "[]"),
    ("req", "x", "x"),
    ("short", "abc", "abc"),
    ("code", "AB12", "AB12"),
    ("colour", "green", "green"),
    ("level", "02", "2"),
    ("pct", "100", "100"),
    ("when", "2020-01-01", "2020-01-01"),
    ("at", "2029-12-31T23:00:00-01:00", "2029-12-31T23:00:00-01:00"),
    ("tags", '["x"]', '["x"]'),
]

INVALID = [
    ("email", "not-an-email", Code.invalid_value),
    ("uri", "example.com", Code.invalid_value),
    ("uuid", "1234", Code.invalid_value),
    ("bin", "!!", Code.invalid_value),
    ("n", "1,5", Code.invalid_value),
    ("n", "٣", Code.invalid_value),  # digits are ASCII only
    ("n", "1_000", Code.invalid_value),
    ("n", "1e999999", Code.out_of_range),
    ("money", "1.234", Code.invalid_value),
    ("money", "12345.6", Code.invalid_value),  # 5 digits before the mark: maxDigits 6 - 2
    ("money", "NaN", Code.invalid_value),
    ("eu", "1.5.5,1,2", Code.invalid_value),
    ("i", "1.0", Code.invalid_value),
    ("i", "9223372036854775808", Code.out_of_range),
    ("b", "yes", Code.invalid_value),
    ("yn", "true", Code.invalid_value),
    ("d", "2023-02-29", Code.invalid_value),
    ("d", "20240101", Code.invalid_value),
    ("d_fmt", "2024-12-31", Code.invalid_value),
    ("dt", "1700000000", Code.invalid_value),  # not a unix timestamp
    ("dt", "2024-01-01T25:00", Code.invalid_value),
    ("t", "10:00+01:00", Code.invalid_value),
    ("y", "99", Code.invalid_value),
    ("o", "[1]", Code.invalid_value),
    ("o", '{"a": NaN}', Code.invalid_value),
    ("o", '{"a": "\\u0000"}', Code.invalid_value),
    ("a", "{}", Code.invalid_value),
    ("req", "", Code.required),
    ("short", "a", Code.too_short),
    ("short", "abcd", Code.too_long),
    ("code", "ab12", Code.pattern_mismatch),
    ("colour", "blue", Code.not_in_enum),
    ("level", "4", Code.not_in_enum),
    ("pct", "100.01", Code.out_of_range),
    ("pct", "-1", Code.out_of_range),
    ("pct", "NaN", Code.out_of_range),
    ("when", "2019-12-31", Code.out_of_range),
    ("at", "2030-01-01T00:00:01Z", Code.out_of_range),
    ("tags", "[]", Code.too_short),
    ("tags", "[1,2,3]", Code.too_long),
    ("s", "nul\x00byte", Code.nul_byte),
]


@pytest.mark.parametrize(("name", "raw", "canonical"), VALID)
def test_valid_cells_load_as_their_canonical_text(name, raw, canonical):
    assert judge_cell(IMPORTER.column(name), raw) == canonical


@pytest.mark.parametrize(("name", "raw", "code"), INVALID)
def test_invalid_cells_are_rejected_with_their_code(name, raw, code):
    verdict = judge_cell(IMPORTER.column(name), raw)
    assert isinstance(verdict, CellError), verdict
    assert verdict.code is code, verdict


def test_every_type_and_constraint_is_covered():
    types = {IMPORTER.column(name).type for name, _, _ in VALID + INVALID}
    assert types == set(FieldType)
    codes = {code for _, _, code in INVALID}
    assert {
        Code.required,
        Code.too_short,
        Code.too_long,
        Code.pattern_mismatch,
        Code.not_in_enum,
        Code.out_of_range,
        Code.invalid_value,
    } <= codes


def test_missing_values_follow_the_declaration():
    # default [""]: an empty cell is missing (NULL); "NA" is a value
    assert judge_cell(IMPORTER.column("n"), "") is None
    assert judge_cell(IMPORTER.column("s"), "NA") == "NA"
    # ["", "NA"]: both are missing, in every column
    assert judge_cell(NA.column("s"), "NA") is None
    assert judge_cell(NA.column("n"), "NA") is None
    assert judge_cell(NA.column("req"), "NA") == CellError(Code.required, "req is required.")
    # []: an empty string stays an empty string, and is not a number
    assert judge_cell(KEEP_EMPTY.column("s"), "") == ""
    assert judge_cell(KEEP_EMPTY.column("n"), "") == CellError(
        Code.invalid_value, "Expected a number such as 12.50."
    )


def test_missing_value_tokens_and_empty_strings_reach_copy_correctly():
    columns = [NA.column("s"), NA.column("n")]
    checked = RowValidator(columns, null=NA.copy_null).check([["NA", "NA"], ["x", ""]], [2, 3])
    assert checked.lines == ["\t", "x\t"]  # '' is COPY's NULL marker here
    columns = [KEEP_EMPTY.column("s"), KEEP_EMPTY.column("req")]
    assert KEEP_EMPTY.copy_null == "\\N"
    checked = RowValidator(columns, null=KEEP_EMPTY.copy_null).check([["", "x"]], [2])
    assert checked.lines == ["\tx"]  # an empty string, not NULL
    assert checked.errors == []


@pytest.mark.parametrize("importer", [IMPORTER, NA, KEEP_EMPTY], ids=["default", "na", "keep"])
def test_fast_patterns_accept_only_what_the_field_accepts_unchanged(importer):
    rng = random.Random(3)
    alphabet = string.printable + "éü€\u00a0\u3000٣"
    samples = [raw for _, raw, _ in VALID + INVALID] + ["", " ", "NA", "0", "-0", "+1", "1.50"]
    samples += ["".join(rng.choices(alphabet, k=rng.randint(0, 10))) for _ in range(400)]
    for column in importer.columns:
        for key in (False, True) if column.type in KEY_TYPES else (False,):
            pattern = cell_pattern(column, key=key, null=importer.copy_null)
            if pattern is None:
                continue
            check = re.compile(pattern)
            for raw in samples:
                if not check.fullmatch(raw) or "\t" in raw:
                    continue
                verdict = judge_cell(column, raw)
                assert not isinstance(verdict, CellError), (column.name, raw, verdict)
                if verdict is None:
                    assert raw == ""
                    assert importer.copy_null == ""
                elif column.type is FieldType.string or key:
                    assert verdict == raw, (column.name, raw)
                else:
                    assert column.parse(verdict) == column.parse(raw), (column.name, raw)


def test_trim_whitespace_strips_strings_and_keys_stay_canonical():
    trimmed = declared(
        table="t",
        trimWhitespace=True,
        schema={"fields": [{"name": "k", "type": "integer"}, {"name": "s"}], "primaryKey": "k"},
    )
    assert judge_cell(trimmed.column("s"), "  a b  ") == "a b"
    key_pattern = re.compile(cell_pattern(trimmed.column("k"), key=True) or "")
    assert [v for v in ("0", "7", "-7", "07", "+7", "-0") if key_pattern.fullmatch(v)] == [
        "0",
        "7",
        "-7",
    ]
