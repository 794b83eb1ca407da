"""The parameters of an import job: what a request may choose (``ImportOptions``: the form of
POST /v1/imports, the ``options`` of an import schedule) and what the job stores
(``ImportParams``, read back by the worker). One validation, so the API, schedules and the
worker agree on what a valid import request is."""

from __future__ import annotations

import codecs
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import InvalidRequest
from core.imports.importer import Importer, Mode

_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
# Text encodings an upload may declare, by Python codec name. An allow-list, not a probe:
# Python also has codecs that are not text encodings of a file (utf-7, raw_unicode_escape,
# unicode_escape, idna, punycode, rot13, base64...), some of which turn bytes into
# characters that were never in the file. Each of these is ASCII-compatible, which the
# reader needs (it splits lines on b"\n" before decoding).
ALLOWED_ENCODINGS = frozenset(
    {
        "utf-8",
        "utf-8-sig",
        "ascii",
        "iso8859-1",
        "iso8859-2",
        "iso8859-3",
        "iso8859-4",
        "iso8859-5",
        "iso8859-7",
        "iso8859-9",
        "iso8859-13",
        "iso8859-15",
        "cp1250",
        "cp1251",
        "cp1252",
        "cp1253",
        "cp1254",
        "cp1257",
        "koi8-r",
        "koi8-u",
        "mac-roman",
        "cp437",
        "cp850",
    }
)


def canonical_encoding(name: str) -> str:
    """A Python codec name for ``name``; ValueError unless it is on the allow-list."""
    try:
        codec = codecs.lookup(name.strip())
    except LookupError:
        raise ValueError(f"unknown encoding {name!r}") from None
    if codec.name not in ALLOWED_ENCODINGS:
        raise ValueError(
            f"encoding {name!r} is not supported; use one of "
            + ", ".join(sorted(ALLOWED_ENCODINGS))
        )
    return codec.name


def parse_delimiter(raw: str) -> str:
    value = _DELIMITER_NAMES.get(raw.strip().lower(), raw)
    if len(value) != 1 or value in '"\r\n' or value.isalnum():
        raise ValueError("delimiter must be one character such as , ; | or tab")
    return value


def parse_error_threshold(raw: str) -> int | float:
    """``100`` allows at most 100 rejected rows; ``0.05`` or ``5%`` at most 5 % of rows."""
    text = raw.strip()
    try:
        if text.endswith("%"):
            fraction = float(text[:-1]) / 100
        elif "." in text or "e" in text.lower():
            fraction = float(text)
        else:
            count = int(text)
            if count < 0:
                raise ValueError
            return count
    except ValueError:
        raise ValueError(
            "error_threshold must be a row count (e.g. 100) or a fraction (0.05 or 5%)"
        ) from None
    if not 0 <= fraction <= 1:
        raise ValueError("an error_threshold fraction must be between 0 and 1")
    return fraction


class StoredFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    sha256: str
    size: int
    filename: str | None = None


class ImportParams(BaseModel):
    """``jobs.params`` of an ``import`` job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    importer: str
    upload: StoredFile
    dry_run: bool = False
    mode: Literal["upsert", "insert"] = "upsert"
    # An int is a maximum number of rejected rows, a float a maximum fraction of rows.
    error_threshold: int | float | None = Field(default=None, ge=0)
    delimiter: str | None = None
    encoding: str | None = None
    # May the job learn what the table holds beyond its own writes? A dry run checks
    # existing keys and taken unique values only when it may (see Importer.may_read_table).
    reveal_table: bool = True

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str | None) -> str | None:
        return None if value is None else parse_delimiter(value)

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str | None) -> str | None:
        return None if value is None else canonical_encoding(value)

    @field_validator("error_threshold")
    @classmethod
    def _threshold(cls, value: int | float | None) -> int | float | None:
        if isinstance(value, float) and value > 1:
            raise ValueError("an error_threshold fraction must be between 0 and 1")
        return value

    def threshold_exceeded(self, *, rejected: int, rows: int) -> bool:
        limit = self.error_threshold
        if limit is None:
            return False
        if isinstance(limit, float):
            return rejected > limit * rows
        return rejected > limit


class ImportOptions(BaseModel):
    """What an import request may choose besides its file and importer. Values come as a
    form sends them (strings, padded or blank) or as JSON; ``params`` checks them once more
    with ImportParams, the model the worker reads."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode | None = None  # None: the importer's declared mode
    error_threshold: int | float | None = None
    delimiter: str | None = Field(default=None, min_length=1, max_length=10)
    encoding: str | None = Field(default=None, min_length=1, max_length=50)

    @field_validator("error_threshold", mode="before")
    @classmethod
    def _threshold(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_error_threshold(value) if value.strip() else None
        return value

    @field_validator("delimiter", "encoding", mode="before")
    @classmethod
    def _blank_is_absent(cls, value: Any) -> Any:
        # Padding goes and a blank value means "not given"; but a tab is a delimiter.
        if isinstance(value, str) and value != "\t":
            return value.strip() or None
        return value

    def for_importer(self, importer: Importer, *, field: str) -> Self:
        """With the mode the import runs in (the importer's when none was asked for);
        InvalidRequest at ``field`` for upsert into an importer without a primaryKey."""
        mode = self.mode or importer.mode
        if mode == "upsert" and not importer.key:
            raise InvalidRequest(
                f"Importer {importer.name!r} has no primaryKey: only mode insert is possible.",
                where={"field": field},
            )
        return self.model_copy(update={"mode": mode})

    def params(
        self, *, importer: str, upload: StoredFile, reveal_table: bool, dry_run: bool = False
    ) -> ImportParams:
        """The job's params (pydantic's ValidationError for a delimiter, encoding or
        threshold ImportParams refuses)."""
        return ImportParams(
            importer=importer,
            upload=upload,
            dry_run=dry_run,
            reveal_table=reveal_table,
            # Only these options: a subclass (the API's form) may carry more fields.
            **self.model_dump(include=set(ImportOptions.model_fields), exclude_none=True),
        )
