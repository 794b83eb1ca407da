"""Table Schema fields: how one CSV cell of a declared field becomes a value, checked against
the field's constraints, and the text PostgreSQL loads (parsers in ``cell_values``).

Each declared field becomes a ``Column``: its type and format pick a parser (text -> value),
its constraints are checked on the value, and the value is written back as canonical text
that PostgreSQL parses to the same value. Semantics follow Frictionless Table Schema v1:

- string (formats default, email, uri, uuid, binary = base64), number (``decimalChar``,
  ``groupChar``, ``bareNumber``; ``NaN``/``INF``/``-INF``), integer, boolean (``trueValues``,
  ``falseValues``), date / time / datetime (formats default = ISO 8601, ``any``, or a
  strptime pattern such as ``%d/%m/%Y``), year, object / array (JSON);
- constraints required, unique (checked by the loader), minimum, maximum, minLength,
  maxLength, pattern (the whole cell, as written), enum.

Where Conveyor is stricter than the letter of the spec it says so: digits are ASCII only;
numbers are finite when the field declares ``decimalPlaces``/``maxDigits``; times carry no
UTC offset; a datetime without an offset is UTC.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from core.imports.cell_values import (
    CellInvalid,
    NumberSyntax,
    canonical_text,
    comparable,
    parse_integer,
    parse_json,
    parse_number,
    parse_string,
    parse_year,
    temporal_parser,
)
from core.imports.row_errors import RowErrorCode


class FieldType(enum.StrEnum):
    string = "string"
    number = "number"
    integer = "integer"
    boolean = "boolean"
    date = "date"
    datetime = "datetime"
    time = "time"
    year = "year"
    object = "object"
    array = "array"


STRING_FORMATS = ("default", "email", "uri", "uuid", "binary")
TEMPORAL = (FieldType.date, FieldType.datetime, FieldType.time)
ORDERED = (FieldType.number, FieldType.integer, FieldType.year, *TEMPORAL)
SIZED = (FieldType.string, FieldType.object, FieldType.array)
DEFAULT_TRUE = ("true", "True", "TRUE", "1")
DEFAULT_FALSE = ("false", "False", "FALSE", "0")


@dataclass(frozen=True)
class Column:
    """One declared field, ready to judge cells."""

    name: str
    type: FieldType
    format: str = "default"
    required: bool = False
    unique: bool = False
    description: str | None = None
    trim: bool = False  # strip surrounding whitespace of strings too (other types always)
    missing_values: tuple[str, ...] = ("",)
    min_length: int | None = None
    max_length: int | None = None
    minimum: Any = None  # a parsed value of the field's type
    maximum: Any = None
    pattern: str | None = None
    enum: tuple[Any, ...] | None = None  # parsed values
    max_digits: int | None = None  # number: digits in all
    decimal_places: int | None = None  # number: digits after the decimal mark
    true_values: tuple[str, ...] = DEFAULT_TRUE
    false_values: tuple[str, ...] = DEFAULT_FALSE
    number_syntax: NumberSyntax = field(default_factory=NumberSyntax)
    _compiled_pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pattern is not None:
            object.__setattr__(self, "_compiled_pattern", re.compile(self.pattern))

    @property
    def strips(self) -> bool:
        return self.trim or self.type is not FieldType.string

    def parse(self, text: str) -> Any:
        """The value of a non-missing cell (already stripped where it should be)."""
        kind = self.type
        if kind is FieldType.string:
            return parse_string(text, self.format)
        if kind is FieldType.number:
            return parse_number(text, self.number_syntax)
        if kind is FieldType.integer:
            return parse_integer(text, self.number_syntax)
        if kind is FieldType.boolean:
            if text in self.true_values:
                return True
            if text in self.false_values:
                return False
            allowed = ", ".join([*self.true_values, *self.false_values])
            raise CellInvalid(RowErrorCode.invalid_value, f"Expected a boolean ({allowed}).")
        if kind is FieldType.year:
            return parse_year(text)
        if kind in (FieldType.object, FieldType.array):
            return parse_json(text, kind)
        return temporal_parser(kind, self.format)(text)

    def check(self, text: str, value: Any) -> None:
        """Raise CellInvalid unless ``value`` (read from ``text``) meets the constraints."""
        if self._compiled_pattern is not None and not self._compiled_pattern.fullmatch(text):
            raise CellInvalid(
                RowErrorCode.pattern_mismatch, f"Does not match the pattern {self.pattern}."
            )
        if self.type in SIZED:
            self._check_length(text if self.type is FieldType.string else value)
        if self.type is FieldType.number:
            self._check_digits(value)
        if self.type in ORDERED:
            self._check_range(value)
        if self.enum is not None and comparable(value) not in self.enum:
            shown = ", ".join(canonical_text(v) for v in self.enum[:10])
            raise CellInvalid(RowErrorCode.not_in_enum, f"Must be one of: {shown}.")

    def _check_length(self, sized: Any) -> None:
        what = "characters" if isinstance(sized, str) else "items"
        if self.min_length is not None and len(sized) < self.min_length:
            raise CellInvalid(
                RowErrorCode.too_short, f"Must have at least {self.min_length} {what}."
            )
        if self.max_length is not None and len(sized) > self.max_length:
            raise CellInvalid(RowErrorCode.too_long, f"Must have at most {self.max_length} {what}.")

    def _check_digits(self, value: Decimal) -> None:
        if self.max_digits is None and self.decimal_places is None:
            return
        if not value.is_finite():
            raise CellInvalid(RowErrorCode.invalid_value, "Must be a finite number.")
        _, digits, exponent = value.normalize().as_tuple()
        assert isinstance(exponent, int)
        places = max(-exponent, 0)
        whole = max(len(digits) + exponent, 0) if value else 0
        if self.decimal_places is not None and places > self.decimal_places:
            raise CellInvalid(
                RowErrorCode.invalid_value,
                f"At most {self.decimal_places} digits after the decimal mark.",
            )
        if self.max_digits is not None and whole > self.max_digits - (self.decimal_places or 0):
            message = f"At most {self.max_digits} digits in all."
            raise CellInvalid(RowErrorCode.invalid_value, message)

    def _check_range(self, value: Any) -> None:
        if isinstance(value, Decimal) and value.is_nan():
            if self.minimum is not None or self.maximum is not None:
                raise CellInvalid(RowErrorCode.out_of_range, "NaN is outside any range.")
            return
        key = comparable(value)
        if self.minimum is not None and key < comparable(self.minimum):
            raise CellInvalid(
                RowErrorCode.out_of_range, f"Must be at least {canonical_text(self.minimum)}."
            )
        if self.maximum is not None and key > comparable(self.maximum):
            raise CellInvalid(
                RowErrorCode.out_of_range, f"Must be at most {canonical_text(self.maximum)}."
            )

    def judge(self, raw: str) -> str | None:
        """The canonical text of a cell, None for a missing value; raises CellInvalid."""
        if "\x00" in raw:
            raise CellInvalid(RowErrorCode.nul_byte, "The value contains a NUL byte.")
        text = raw.strip() if self.strips else raw
        if text in self.missing_values:
            if self.required:
                raise CellInvalid(RowErrorCode.required, f"{self.name} is required.")
            return None
        try:
            value = self.parse(text)
        except InvalidOperation:
            raise CellInvalid(RowErrorCode.invalid_value, "Not a valid number.") from None
        self.check(text, value)
        return canonical_text(value)
