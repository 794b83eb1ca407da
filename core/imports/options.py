"""The parameters of an import job: built from the HTTP request by the API, read back by the
worker. One model, so both sides agree on what a valid import request is."""

from __future__ import annotations

import codecs
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Bytes that must mean the same in the file's encoding as in ASCII, because the reader splits
# lines on b"\n" and csv looks for these characters.
_ASCII_PROBE = '\n\r,;\t|"azAZ09 '
_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def canonical_encoding(name: str) -> str:
    """A Python codec name for ``name``; ValueError unless it is ASCII-compatible."""
    try:
        codec = codecs.lookup(name.strip())
    except LookupError:
        raise ValueError(f"unknown encoding {name!r}") from None
    try:
        compatible = _ASCII_PROBE.encode(codec.name) == _ASCII_PROBE.encode("ascii")
    except (UnicodeError, LookupError):
        compatible = False
    if not compatible or codec.name.startswith(("utf-16", "utf-32")):
        raise ValueError(f"encoding {name!r} is not supported (it must be ASCII-compatible)")
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
