"""Lines of an upload as the CSV reader consumes them, within bounds: each line read at most
the record cap at a time, bytes counted per record and per batch; and the plain splitter,
which reads quote-free lines without the csv module."""

from __future__ import annotations

import codecs
import functools
from collections.abc import Callable, Iterator
from typing import BinaryIO

from core.imports.failures import ImportFailed
from core.imports.failures import ImportFailureCode as Failure


class LineSource:
    """The file's lines from its current position, decoded, each read at most ``cap`` + 1
    bytes at a time, with byte accounting per record and per batch.

    ``mark`` runs after each record (the reader maps it over the csv reader): it starts the
    next record, so a record that grows past ``cap`` bytes fails the import as soon as it
    does; and once a batch has passed its byte budget it holds the record back (``carry``)
    and ends the batch, so batches stay within ``batch_bytes`` however large rows are.
    """

    # The hot path touches these once or twice per line and per record: slots are faster.
    __slots__ = (
        "_decode",
        "batch_start",
        "budget_end",
        "cap",
        "carry",
        "consumed",
        "file",
        "record_start",
    )

    def __init__(self, file: BinaryIO, encoding: str, *, cap: int) -> None:
        self.file = file
        self.cap = cap
        self.consumed = 0  # bytes handed out since this source was opened
        self.record_start = 0
        self.batch_start = 0
        self.budget_end = 1 << 62
        self.carry: tuple[list[str], int] | None = None  # (record, where it started)
        self._decode = (
            bytes.decode
            if codecs.lookup(encoding).name == "utf-8"
            else functools.partial(bytes.decode, encoding=encoding)
        )

    def __iter__(self) -> Iterator[str]:
        readline = functools.partial(self.file.readline, self.cap + 1)
        decode = self._decode
        cap = self.cap
        for line in iter(readline, b""):
            consumed = self.consumed = self.consumed + len(line)
            if consumed - self.record_start > cap:
                raise RecordTooLarge()
            yield decode(line)

    def begin_batch(self, budget: int) -> list[str] | None:
        """Start a batch of at most ``budget`` bytes; the record held back, if any."""
        carried = self.carry
        self.carry = None
        self.batch_start = carried[1] if carried else self.consumed
        self.budget_end = self.batch_start + budget
        return carried[0] if carried else None

    @property
    def batch_end(self) -> int:
        """Bytes from the opening offset to where the next batch starts."""
        return self.carry[1] if self.carry else self.consumed

    def mark(self, record: list[str]) -> list[str]:
        consumed = self.consumed
        if consumed > self.budget_end and self.record_start > self.batch_start:
            self.carry = (record, self.record_start)
            self.record_start = consumed
            raise StopIteration  # ends the batch's islice; the record waits in carry
        self.record_start = consumed
        return record


class RecordTooLarge(Exception):
    """Raised by LineSource mid-record; the reader knows the row and says it."""


def record_too_large(row: int, cap: int) -> ImportFailed:
    return ImportFailed(
        Failure.record_too_large,
        f"Row {row}: the record is longer than {cap:,} bytes "
        "(CONVEYOR_IMPORT_MAX_RECORD_BYTES); is this a CSV file with line breaks?",
        where={"row": row},
    )


class NeedsCsv(Exception):
    """A line the plain splitter cannot read exactly as the csv module would."""


def plain_splitter(delimiter: str, field_limit: int) -> Callable[[str], list[str]]:
    """Records of a file without quotes are its lines split on the delimiter: the same
    fields as csv.reader gives, without its per-character state machine (about five times
    faster on wide rows). A line with a quote character, a carriage return other than in its
    line ending, or longer than the csv field limit raises NeedsCsv."""

    def split(line: str) -> list[str]:
        if line.endswith("\n"):
            line = line[:-2] if line.endswith("\r\n") else line[:-1]
        if '"' in line or "\r" in line or len(line) > field_limit:
            raise NeedsCsv()
        return line.split(delimiter) if line else []

    return split
