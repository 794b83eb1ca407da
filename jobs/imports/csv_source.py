"""Reading an uploaded CSV: checks that fail the whole file up front (empty, binary,
undecodable), the header and its delimiter, then records in batches with exact resume points.

Resuming needs the byte offset where the next record starts. Lines are read from the binary
file and decoded one by one for ``csv.reader``, which pulls exactly the lines a record needs
(quoted newlines included) and no more, so after any record ``file.tell()`` is the start of
the next one. Encodings must therefore be ASCII-compatible (see core/imports/options.py).

Row numbers are record numbers, as a spreadsheet shows them: the header is row 1, a record
with quoted newlines is one row, and a blank line is a row (skipped, never loaded).

Hostile files stay in bounds: a line is read at most ``max_record_bytes`` at a time and a
record (all its lines) longer than that fails the import (``record_too_large``) as soon as
it passes the cap, so a 1 GiB single-line file never reaches memory; a header wider than
``max_columns`` fails it too (``too_many_columns``); a batch stops at ``batch_bytes``.
"""

from __future__ import annotations

import codecs
import csv
import functools
import itertools
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from core.imports.failures import ImportFailed
from core.imports.failures import ImportFailureCode as Failure
from core.imports.importer import normalise_header
from core.imports.row_errors import RowError, RowErrorCode
from jobs.imports.line_source import (
    LineSource,
    NeedsCsv,
    RecordTooLarge,
    plain_splitter,
    record_too_large,
)

UTF8_BOM = codecs.BOM_UTF8
_WIDE_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_MAGIC = {
    b"PK\x03\x04": "a ZIP archive (an .xlsx workbook?)",
    b"\xd0\xcf\x11\xe0": "an Office document (an .xls workbook?)",
    b"%PDF": "a PDF document",
    b"\x1f\x8b": "gzip-compressed data",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x7fELF": "an executable",
}
# C0 control bytes that text files do not contain (tab, newlines, form feed and ESC aside).
# A few (a stray NUL in a row) are rejected per row; a file full of them is not text.
_CONTROL = [bytes([b]) for b in (*range(0, 9), *range(14, 27), *range(28, 32))]
_MAX_CONTROL_SHARE = 0.05
SAMPLE_BYTES = 64 * 1024
SCAN_CHUNK = 1 << 20
CANDIDATE_DELIMITERS = (",", ";", "\t", "|")


def is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")


def data_start(file: BinaryIO, encoding: str) -> int:
    """Offset of the first character: past a UTF-8 byte order mark, if there is one."""
    file.seek(0)
    start = len(UTF8_BOM) if is_utf8(encoding) and file.read(3) == UTF8_BOM else 0
    file.seek(start)
    return start


# --- whole-file checks -------------------------------------------------------------------


def prescan(file: BinaryIO, *, encoding: str) -> int:
    """Fail the whole file early (empty, binary, undecodable); return its line count."""
    check_sample(file, encoding=encoding)
    return count_lines(file, encoding=encoding)


def check_sample(file: BinaryIO, *, encoding: str) -> None:
    """Fail at once a file whose first bytes show it is empty, wide-encoded or binary."""
    start = data_start(file, encoding)
    sample = file.read(SAMPLE_BYTES)
    if not sample.strip():
        raise ImportFailed(Failure.empty_file, "The file is empty: no header, no rows.")
    if start == 0 and sample.startswith(_WIDE_BOMS):
        raise ImportFailed(
            Failure.undecodable,
            "The file is UTF-16 or UTF-32 encoded; save it as UTF-8 and upload it again.",
        )
    _refuse_binary(sample)


def count_lines(file: BinaryIO, *, encoding: str) -> int:
    """Decode the whole file and count its lines: one pass in C-speed chunks, so a bad byte
    near the end fails the import before any row is loaded."""
    start = data_start(file, encoding)
    return _decode_all(file, encoding, start)


def _refuse_binary(sample: bytes) -> None:
    for magic, what in _MAGIC.items():
        if sample.startswith(magic):
            raise ImportFailed(Failure.not_csv, f"The upload is {what}, not a CSV file.")
    controls = sum(sample.count(byte) for byte in _CONTROL)
    if controls > _MAX_CONTROL_SHARE * len(sample):
        raise ImportFailed(
            Failure.not_csv,
            "The upload looks like binary data, not a CSV file "
            f"({controls} control bytes in its first {len(sample):,}).",
        )


def _decode_all(file: BinaryIO, encoding: str, start: int) -> int:
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    lines, offset, last = 0, start, b"\n"
    while chunk := file.read(SCAN_CHUNK):
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as error:
            raise _undecodable(encoding, chunk, error.start, offset, lines) from None
        lines += chunk.count(b"\n")
        offset += len(chunk)
        last = chunk[-1:]
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise _undecodable(encoding, b"", 0, offset, lines) from None
    return lines + (last != b"\n")


def _undecodable(
    encoding: str, chunk: bytes, position: int, offset: int, lines_before: int
) -> ImportFailed:
    line = lines_before + chunk.count(b"\n", 0, position) + 1
    byte = chunk[position : position + 1]
    what = f"byte 0x{byte.hex()}" if byte else "the file's last character"
    hint = " If the file is not UTF-8, pass its encoding (e.g. latin-1 or cp1252)."
    return ImportFailed(
        Failure.undecodable,
        f"Line {line}: {what} is not valid {encoding}.{hint if is_utf8(encoding) else ''}",
        where={"line": line, "offset": offset + position},
    )


# --- header ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    fields: list[str]
    row: int  # its row number (1 unless blank lines come first)
    delimiter: str
    end_offset: int  # where the first data record starts


def _reader(lines: Iterator[str], delimiter: str) -> Iterator[list[str]]:
    # strict: a bad quote is an error for that record (the reader then goes on with the next
    # one) instead of silently swallowing the rest of the file into one field.
    return csv.reader(lines, delimiter=delimiter, quotechar='"', doublequote=True, strict=True)


def sniff_delimiter(line: str, known: Collection[str]) -> str:
    """The candidate that splits the header line into the most known column names (then into
    the most fields); comma when nothing tells them apart."""

    def score(delimiter: str) -> tuple[int, int]:
        try:
            fields = next(_reader(iter([line]), delimiter), [])
        except csv.Error:
            return (-1, 0)
        return (sum(normalise_header(name) in known for name in fields), len(fields))

    return max(CANDIDATE_DELIMITERS, key=score)  # max keeps the first of equals


def read_header(
    file: BinaryIO,
    *,
    encoding: str,
    delimiter: str | None,
    known: Collection[str],
    max_record_bytes: int,
    max_columns: int,
) -> Header:
    """The first non-blank record; fails the import when there is none, or when it is
    longer than ``max_record_bytes`` or has more than ``max_columns`` fields."""
    offset = data_start(file, encoding)
    file.seek(offset)
    row = 1
    for raw in iter(functools.partial(file.readline, max_record_bytes + 1), b""):
        if raw.strip():
            break
        offset += len(raw)
        row += 1
    else:
        raise ImportFailed(Failure.empty_file, "The file is empty: no header, no rows.")
    file.seek(offset)
    lines = LineSource(file, encoding, cap=max_record_bytes)
    try:
        chosen = delimiter or sniff_delimiter(raw.decode(encoding), known)
        fields = next(_reader(iter(lines), chosen))
    except RecordTooLarge:
        raise record_too_large(row, max_record_bytes) from None
    except UnicodeDecodeError:
        hint = (
            " If the file is not UTF-8, pass its encoding (e.g. latin-1)."
            if is_utf8(encoding)
            else ""
        )
        raise ImportFailed(
            Failure.undecodable,
            f"Row {row}: the header is not valid {encoding}.{hint}",
            where={"row": row},
        ) from None
    except (csv.Error, StopIteration) as error:
        raise ImportFailed(
            Failure.not_csv,
            f"Row {row}: the header is not valid CSV ({error}).",
            where={"row": row},
        ) from None
    if len(fields) > max_columns:
        raise ImportFailed(
            Failure.too_many_columns,
            f"Row {row}: the header has {len(fields):,} columns, more than the "
            f"{max_columns:,} allowed (CONVEYOR_IMPORT_MAX_COLUMNS).",
            where={"row": row},
        )
    return Header(fields=fields, row=row, delimiter=chosen, end_offset=file.tell())


# --- records -----------------------------------------------------------------------------


@dataclass
class RawBatch:
    """Up to ``limit`` consecutive records, split into well-shaped rows and rejected ones."""

    rows: list[list[str]]
    row_numbers: Sequence[int]  # of ``rows``
    rejected: list[RowError]
    first_row: int
    last_row: int  # row number of the last record read (0 records: first_row - 1)
    end_offset: int  # where the next record starts
    exhausted: bool  # no record after this batch

    @property
    def records(self) -> int:
        """Data records read (rejected ones included, blank lines not)."""
        return len(self.rows) + len({error.row for error in self.rejected})


class RecordReader:
    """Reads records from ``offset`` on; the record there has row number ``next_row``.
    A batch holds at most ``limit`` records and at most ``batch_bytes`` bytes (or one
    record, if that record alone is larger). Lines are split plainly until one needs the
    csv module (a quote); from then on every batch of the file goes through csv.reader."""

    def __init__(
        self,
        file: BinaryIO,
        *,
        encoding: str,
        delimiter: str,
        width: int,
        offset: int,
        next_row: int,
        max_record_bytes: int,
        batch_bytes: int,
    ) -> None:
        self._file = file
        self._encoding = encoding
        self._delimiter = delimiter
        self._width = width
        self._next_row = next_row
        self._offset = offset
        self._max_record_bytes = max_record_bytes
        self._batch_bytes = batch_bytes
        self._plain = True
        self._open_at(offset)

    def _open_at(self, offset: int) -> None:
        self._file.seek(offset)
        self._opened_at = offset
        self._lines = LineSource(self._file, self._encoding, cap=self._max_record_bytes)
        records: Iterator[list[str]] = (
            map(plain_splitter(self._delimiter, csv.field_size_limit()), iter(self._lines))
            if self._plain
            else _reader(iter(self._lines), self._delimiter)
        )
        self._records = map(self._lines.mark, records)

    def read_batch(self, limit: int) -> RawBatch:
        """The next ``limit`` records (fewer at the end of the file, or past batch_bytes)."""
        first = self._next_row
        carried = self._lines.begin_batch(self._batch_bytes)
        records = [carried] if carried is not None else []
        try:
            # The hot path: the C reader fills the batch without a Python loop per record.
            records += itertools.islice(self._records, limit - len(records))
        except RecordTooLarge:
            # ``records`` holds what was read before: the next record is the culprit.
            raise record_too_large(first + len(records), self._max_record_bytes) from None
        except NeedsCsv:
            self._plain = False  # this batch again, and the rest of the file, through csv
            self._open_at(self._offset)
            return self.read_batch(limit)
        except csv.Error:
            # A malformed record: read this batch again, record by record, to place it.
            self._open_at(self._offset)
            self._lines.begin_batch(self._batch_bytes)
            return self._finish(first, *self._read_carefully(limit, first))
        exhausted = len(records) < limit and self._lines.carry is None
        if set(map(len, records)) <= {self._width}:
            return self._finish(first, records, [], [], exhausted)
        return self._finish(first, *self._sort_out(records, first), exhausted)

    def _finish(
        self,
        first: int,
        rows: list[list[str]],
        skipped: list[int],
        rejected: list[RowError],
        exhausted: bool,
    ) -> RawBatch:
        count = len(rows) + len(skipped)
        self._next_row = first + count
        if count:
            self._offset = self._opened_at + self._lines.batch_end
        numbers: Sequence[int] = range(first, first + len(rows))
        if skipped:
            gaps = set(skipped)
            numbers = [number for number in range(first, first + count) if number not in gaps]
        return RawBatch(rows, numbers, rejected, first, first + count - 1, self._offset, exhausted)

    def _sort_out(
        self, records: list[list[str]], first: int
    ) -> tuple[list[list[str]], list[int], list[RowError]]:
        rows: list[list[str]] = []
        skipped: list[int] = []
        rejected: list[RowError] = []
        for row, fields in enumerate(records, first):
            if len(fields) == self._width:
                rows.append(fields)
            else:
                skipped.append(row)
                self._odd_record(row, fields, rejected)
        return rows, skipped, rejected

    def _read_carefully(
        self, limit: int, first: int
    ) -> tuple[list[list[str]], list[int], list[RowError], bool]:
        """One record at a time, so a malformed one is rejected and reading goes on."""
        rows: list[list[str]] = []
        skipped: list[int] = []
        rejected: list[RowError] = []
        for row in range(first, first + limit):
            try:
                fields = next(self._records)
            except StopIteration:
                return rows, skipped, rejected, self._lines.carry is None
            except RecordTooLarge:
                raise record_too_large(row, self._max_record_bytes) from None
            except csv.Error as error:
                self._lines.record_start = self._lines.consumed  # the bad record ends here
                skipped.append(row)
                rejected.append(
                    RowError(row, None, RowErrorCode.malformed_row, f"Malformed CSV: {error}.")
                )
                continue
            if len(fields) == self._width:
                rows.append(fields)
            else:
                skipped.append(row)
                self._odd_record(row, fields, rejected)
        return rows, skipped, rejected, False

    def _odd_record(self, row: int, fields: list[str], rejected: list[RowError]) -> None:
        if not any(cell.strip() for cell in fields):
            return  # a blank line (or only delimiters): skipped like a spreadsheet's empty row
        rejected.append(
            RowError(
                row,
                None,
                RowErrorCode.wrong_field_count,
                f"Expected {self._width} fields (as in the header), found {len(fields)}.",
                raw=fields,
            )
        )
