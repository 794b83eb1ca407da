"""csv_source: whole-file checks, header and delimiter, record batches and resume offsets."""

from __future__ import annotations

import csv
import io
import random

import pytest

from core.imports.failures import ImportFailed
from core.imports.row_errors import RowErrorCode
from jobs.imports.csv_source import RecordReader, prescan, read_header, sniff_delimiter
from jobs.imports.line_source import NeedsCsv, plain_splitter

KNOWN = {"sku", "name", "price", "quantity", "description", "category", "updated_at"}
HEADER_LIMITS = {"max_record_bytes": 1 << 20, "max_columns": 100}
READER_LIMITS = {"max_record_bytes": 1 << 20, "batch_bytes": 1 << 20}


def _file(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def _all_records(data: bytes, batch: int, *, width: int = 2, start: int | None = None):
    """Read every record, in batches of ``batch``, reopening at each checkpoint like a resumed
    attempt would; returns (row numbers, rows, rejected rows)."""
    header = read_header(_file(data), encoding="utf-8", delimiter=",", known=KNOWN, **HEADER_LIMITS)
    offset, next_row = (start if start is not None else header.end_offset), header.row + 1
    numbers, rows, rejected = [], [], []
    while True:
        reader = RecordReader(
            _file(data),
            encoding="utf-8",
            delimiter=",",
            width=width,
            offset=offset,
            next_row=next_row,
            **READER_LIMITS,
        )
        raw = reader.read_batch(batch)
        numbers += list(raw.row_numbers)
        rows += raw.rows
        rejected += [(e.row, e.code) for e in raw.rejected]
        offset, next_row = raw.end_offset, raw.last_row + 1
        if raw.exhausted:
            return numbers, rows, rejected


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"\xef\xbb\xbf", "empty_file"),
        (b"\n\r\n  \n", "empty_file"),
        (b"PK\x03\x04" + bytes(200), "not_csv"),
        (bytes(range(256)) * 4, "not_csv"),
        ("sku,name\n".encode("utf-16"), "undecodable"),
        (b"sku,name\nA,caf\xe9\n", "undecodable"),
    ],
)
def test_prescan_fails_the_whole_file(data, code):
    with pytest.raises(ImportFailed) as failure:
        prescan(_file(data), encoding="utf-8")
    assert failure.value.code == code


def test_undecodable_names_line_and_offset():
    data = b"sku,name\nA,ok\nB,caf\xe9\n"
    with pytest.raises(ImportFailed) as failure:
        prescan(_file(data), encoding="utf-8")
    assert failure.value.where == {"line": 3, "offset": data.index(b"\xe9")}
    assert "latin-1" in failure.value.message


def test_prescan_accepts_latin1_with_override_and_counts_lines():
    assert prescan(_file(b"sku,name\nA,caf\xe9\nB,x"), encoding="iso8859-1") == 3


def test_a_stray_nul_is_not_binary():
    assert prescan(_file(b"sku,name\nA,a\x00b\n" + b"B,plain text row\n" * 20), encoding="utf-8")


def test_header_skips_bom_and_leading_blank_lines():
    header = read_header(
        _file(b"\xef\xbb\xbf\r\n\r\nsku,name\r\nA,B\r\n"),
        encoding="utf-8",
        delimiter=None,
        known=KNOWN,
        **HEADER_LIMITS,
    )
    assert (header.fields, header.row, header.delimiter) == (["sku", "name"], 3, ",")
    assert header.end_offset == len(b"\xef\xbb\xbf\r\n\r\nsku,name\r\n")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("sku;name;price", ";"),
        ("sku\tname", "\t"),
        ("sku|name|price", "|"),
        ("sku,name", ","),
        ('"a;b",name,price', ","),  # the quoted semicolon does not make it ;-separated
        ("nothing known here", ","),
    ],
)
def test_sniff_delimiter(line, expected):
    assert sniff_delimiter(line, KNOWN) == expected


def test_rows_are_numbered_as_a_spreadsheet_shows_them():
    data = b'sku,name\nA,"two\nlines"\n\nB,b\r\n"C","x"\n'
    numbers, rows, rejected = _all_records(data, 100)
    assert numbers == [2, 4, 5]  # row 3 is blank: counted, skipped
    assert rows == [["A", "two\nlines"], ["B", "b"], ["C", "x"]]
    assert rejected == []


def test_bad_records_are_rejected_and_reading_goes_on():
    data = b'sku,name\nA,a\nB\nC,c,extra\n"D"x,d\nE,e\n,\n,,,\n'
    numbers, _, rejected = _all_records(data, 100)
    # row 7 (",") has the right width: the validator skips it as blank (see row_validation)
    assert numbers == [2, 6, 7]
    assert rejected == [
        (3, RowErrorCode.wrong_field_count),
        (4, RowErrorCode.wrong_field_count),
        (5, RowErrorCode.malformed_row),
    ]


def test_unclosed_quote_swallows_the_rest_into_one_rejected_row():
    numbers, _, rejected = _all_records(b'sku,name\nA,a\nB,"open\nC,c\n', 100)
    assert numbers == [2]
    assert rejected == [(3, RowErrorCode.malformed_row)]


def test_field_larger_than_the_limit_is_a_malformed_row():
    previous = csv.field_size_limit(1024)
    try:
        numbers, _, rejected = _all_records(b"sku,name\nA," + b"x" * 5000 + b"\nB,b\n", 100)
    finally:
        csv.field_size_limit(previous)
    assert numbers == [3]
    assert rejected == [(2, RowErrorCode.malformed_row)]


@pytest.mark.parametrize("batch", [1, 2, 3, 7, 1000])
def test_resuming_at_each_checkpoint_reads_exactly_the_same_records(batch):
    body = "".join(
        f'S{i},"{"multi" + chr(10) + "line" if i % 3 == 0 else "plain"}"\r\n'
        + ("\n" if i % 4 else "")
        for i in range(25)
    )
    data = ("sku,name\r\n" + body).encode()
    assert _all_records(data, batch) == _all_records(data, 10_000)
    numbers, rows, _ = _all_records(data, batch)
    assert [row[0] for row in rows] == [f"S{i}" for i in range(25)]
    assert numbers == sorted(set(numbers))


def _reader(data: bytes, **limits):
    header = read_header(_file(data), encoding="utf-8", delimiter=",", known=KNOWN, **HEADER_LIMITS)
    return RecordReader(
        _file(data),
        encoding="utf-8",
        delimiter=",",
        width=len(header.fields),
        offset=header.end_offset,
        next_row=header.row + 1,
        **{**READER_LIMITS, **limits},
    )


def test_a_line_longer_than_the_record_cap_fails_at_once():
    data = b"sku,name\nA,a\nB," + b"x" * 5_000 + b"\nC,c\n"
    with pytest.raises(ImportFailed) as failure:
        _reader(data, max_record_bytes=1_024).read_batch(100)
    assert failure.value.code == "record_too_large"
    assert failure.value.where == {"row": 3}


def test_a_multiline_record_past_the_cap_fails_as_soon_as_it_passes_it():
    # Each line is short; the quoted field never closes within the cap.
    data = b'sku,name\nA,"' + b"x\n" * 10_000 + b'"\nB,b\n'
    with pytest.raises(ImportFailed) as failure:
        _reader(data, max_record_bytes=1_024).read_batch(100)
    assert failure.value.code == "record_too_large"
    assert failure.value.where == {"row": 2}


def test_a_header_that_is_too_long_or_too_wide_fails():
    with pytest.raises(ImportFailed) as long_header:
        read_header(
            _file(b"a" * 5_000 + b"\n"),
            encoding="utf-8",
            delimiter=",",
            known=KNOWN,
            max_record_bytes=1_024,
            max_columns=10,
        )
    assert long_header.value.code == "record_too_large"
    with pytest.raises(ImportFailed) as wide:
        read_header(
            _file(b",".join(b"c%d" % i for i in range(11)) + b"\n"),
            encoding="utf-8",
            delimiter=",",
            known=KNOWN,
            max_record_bytes=1_024,
            max_columns=10,
        )
    assert wide.value.code == "too_many_columns"


def test_batches_stop_at_their_byte_cap_and_resume_exactly():
    rows = [f"K{i},{'x' * (i % 50)}" for i in range(2_000)]
    data = ("sku,name\n" + "\n".join(rows) + "\n").encode()
    reader = _reader(data, batch_bytes=4_096)
    seen: list[list[str]] = []
    sizes = []
    while True:
        raw = reader.read_batch(1_000)
        seen += raw.rows
        sizes.append(len(raw.rows))
        if raw.exhausted:
            break
    assert seen == [row.split(",") for row in rows]
    assert max(sizes) < 1_000  # the byte cap, not the row cap, ended the batches
    assert len(sizes) > 2_000 * 30 // 4_096


def test_the_plain_splitter_reads_quote_free_lines_exactly_as_csv_does():
    rng = random.Random(5)
    alphabet = "ab ,;\t|\x00é\u2028 "
    split = plain_splitter(",", 1_000)
    for _ in range(3_000):
        text = "".join(rng.choices(alphabet, k=rng.randint(0, 12)))
        for ending in ("", "\n", "\r\n"):
            line = text + ending
            assert split(line) == next(csv.reader([line], strict=True), []), repr(line)
    for needs_csv in ('a,"b"\n', "a\rb\n", "x" * 1_001):
        with pytest.raises(NeedsCsv):
            split(needs_csv)


@pytest.mark.parametrize("quote_at", [None, 3, 1_500])
def test_files_read_the_same_whether_split_plainly_or_by_csv(quote_at):
    rows = [f"K{i},plain {i}" for i in range(2_000)]
    if quote_at is not None:  # from this record on, csv.reader must take over
        rows[quote_at] = f'K{quote_at},"quoted, with a comma"'
    data = ("sku,name\n" + "\n".join(rows) + "\n").encode()
    numbers, read, rejected = _all_records(data, 700)
    expected = [next(csv.reader([row])) for row in rows]
    assert read == expected
    assert numbers == list(range(2, 2_002))
    assert rejected == []
