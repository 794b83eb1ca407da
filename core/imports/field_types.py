"""Table Schema field types: how one CSV cell becomes a value, and the text PostgreSQL loads.

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

import base64
import binascii
import datetime as dt
import enum
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

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
INT64 = (-(2**63), 2**63 - 1)
# A number's decimal exponent beyond this is refused: its text would be megabytes long.
MAX_EXPONENT = 1_000


class CellInvalid(ValueError):
    """A cell that does not hold a valid value of its field."""

    def __init__(self, code: RowErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> CellInvalid:
    return CellInvalid(RowErrorCode.invalid_value, message)


# --- parsers: text -> value ----------------------------------------------------------------

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SPECIAL_NUMBERS = {"NaN": Decimal("NaN"), "INF": Decimal("Infinity"), "-INF": Decimal("-Inf")}
_NON_NUMERIC_EDGES = re.compile(r"^[^0-9+\-.]+|[^0-9.]+$")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_YEAR = re.compile(r"[0-9]{4}")
_ISO_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_ISO_TIME = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,6}))?)?")
_ISO_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,6}))?)?"
    r"(Z|z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)
# format "any": ISO 8601 first, then these unambiguous shapes (never day/month guessing).
_ANY_DATE = ("%Y/%m/%d", "%Y.%m.%d", "%d %b %Y", "%d %B %Y", "%b %d %Y", "%B %d %Y")
_ANY_TIME = ("%I:%M %p", "%I:%M:%S %p", "%H%M%S")


def _microseconds(fraction: str | None) -> int:
    return int((fraction or "0").ljust(6, "0"))


def _offset(text: str | None) -> dt.tzinfo | None:
    if text is None:
        return None
    if text in ("Z", "z"):
        return dt.UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    if hours > 23 or minutes > 59:
        raise _invalid("The UTC offset is out of range.")
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def parse_iso_date(text: str) -> dt.date:
    match = _ISO_DATE.fullmatch(text)
    if match is None:
        raise _invalid("Expected a date as YYYY-MM-DD.")
    try:
        return dt.date(*map(int, match.groups()))
    except ValueError as error:
        raise _invalid(f"Not a valid date ({error}).") from None


def parse_iso_time(text: str) -> dt.time:
    match = _ISO_TIME.fullmatch(text)
    if match is None:
        raise _invalid("Expected a time as HH:MM:SS (no UTC offset).")
    hour, minute, second, fraction = match.groups()
    try:
        return dt.time(int(hour), int(minute), int(second or 0), _microseconds(fraction))
    except ValueError as error:
        raise _invalid(f"Not a valid time ({error}).") from None


def parse_iso_datetime(text: str) -> dt.datetime:
    match = _ISO_DATETIME.fullmatch(text)
    if match is None:
        raise _invalid("Expected an ISO 8601 date-time such as 2024-01-31T12:00:00Z.")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        return dt.datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            _microseconds(fraction),
            tzinfo=_offset(offset),
        )
    except ValueError as error:
        raise _invalid(f"Not a valid date-time ({error}).") from None


def _strptime(text: str, patterns: Sequence[str], what: str) -> dt.datetime:
    for pattern in patterns:
        try:
            return dt.datetime.strptime(text, pattern)
        except ValueError:
            continue
    shown = patterns[0] if len(patterns) == 1 else "a supported form"
    raise _invalid(f"Expected a {what} in {shown}.")


def temporal_parser(kind: FieldType, fmt: str) -> Callable[[str], Any]:
    """The parser of a date, time or datetime field for its Table Schema format."""
    iso: dict[FieldType, Callable[[str], Any]] = {
        FieldType.date: parse_iso_date,
        FieldType.time: parse_iso_time,
        FieldType.datetime: parse_iso_datetime,
    }
    if fmt == "default":
        return iso[kind]
    if fmt == "any":
        extra = {FieldType.date: _ANY_DATE, FieldType.time: _ANY_TIME}.get(kind, ())
        extra_dt = tuple(f"{d} %H:%M" for d in _ANY_DATE) + tuple(
            f"{d} %H:%M:%S" for d in _ANY_DATE
        )

        def any_form(text: str) -> Any:
            try:
                return iso[kind](text)
            except CellInvalid:
                found = _strptime(text, extra or extra_dt, kind.value)
                return _narrow(kind, found)

        return any_form
    pattern = fmt.removeprefix("fmt:")

    def by_pattern(text: str) -> Any:
        return _narrow(kind, _strptime(text, [pattern], kind.value))

    return by_pattern


def _narrow(kind: FieldType, value: dt.datetime) -> Any:
    if kind is FieldType.date:
        return value.date()
    if kind is FieldType.time:
        if value.tzinfo is not None:
            raise _invalid("A time may not carry a UTC offset.")
        return value.time()
    return value


@dataclass(frozen=True)
class NumberSyntax:
    decimal_char: str = "."
    group_char: str = ""
    bare_number: bool = True

    @property
    def is_default(self) -> bool:
        return self == NumberSyntax()

    def plain(self, text: str, *, decimal: bool) -> str:
        """The text with group characters, a non-standard decimal mark and (bareNumber:
        false) surrounding non-numeric characters such as currency signs taken out."""
        if self.group_char:
            text = text.replace(self.group_char, "")
        if decimal and self.decimal_char != ".":
            if "." in text:
                raise _invalid(f"Expected {self.decimal_char!r} as the decimal mark.")
            text = text.replace(self.decimal_char, ".")
        if not self.bare_number:
            text = _NON_NUMERIC_EDGES.sub("", text)
        return text


def parse_number(text: str, syntax: NumberSyntax) -> Decimal:
    if text in _SPECIAL_NUMBERS:
        return _SPECIAL_NUMBERS[text]
    plain = syntax.plain(text, decimal=True) if not syntax.is_default else text
    if _NUMBER.fullmatch(plain) is None:
        raise _invalid("Expected a number such as 12.50.")
    value = Decimal(plain)
    if abs(value.adjusted()) > MAX_EXPONENT and value:
        raise CellInvalid(RowErrorCode.out_of_range, "The number is too large or too small.")
    return value


def parse_integer(text: str, syntax: NumberSyntax) -> int:
    plain = syntax.plain(text, decimal=False) if not syntax.is_default else text
    if _INTEGER.fullmatch(plain) is None:
        raise _invalid("Expected a whole number.")
    value = int(plain)
    if not INT64[0] <= value <= INT64[1]:
        raise CellInvalid(RowErrorCode.out_of_range, "The number does not fit in 64 bits.")
    return value


def parse_year(text: str) -> int:
    if _YEAR.fullmatch(text) is None:
        raise _invalid("Expected a year as YYYY.")
    return int(text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str, kind: FieldType) -> Any:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise _invalid(f"Expected a JSON {kind.value}.") from None
    expected = dict if kind is FieldType.object else list
    if not isinstance(value, expected):
        raise _invalid(f"Expected a JSON {kind.value}.")
    return value


def parse_string(text: str, fmt: str) -> Any:
    if fmt == "email" and _EMAIL.fullmatch(text) is None:
        raise _invalid("Expected an email address.")
    if fmt == "uri" and _URI.fullmatch(text) is None:
        raise _invalid("Expected a URI with a scheme, such as https://example.com/.")
    if fmt == "uuid":
        try:
            return uuid.UUID(text)
        except ValueError:
            raise _invalid("Expected a UUID.") from None
    if fmt == "binary":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("Expected base64-encoded data.") from None
    return text


# --- canonical text ------------------------------------------------------------------------


def canonical_text(value: Any) -> str:
    """A parsed value as text PostgreSQL parses back to the same value."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        if value.is_nan():
            return "NaN"
        if value.is_infinite():
            return "Infinity" if value > 0 else "-Infinity"
        return format(value, "f")
    if isinstance(value, dt.date | dt.time):  # datetime included
        return value.isoformat()
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        if "\\u0000" in text:  # PostgreSQL's jsonb refuses it
            raise _invalid("JSON text may not contain \\u0000.")
        return text
    return str(value)


def comparable(value: Any) -> Any:
    """A value in a form that orders and compares consistently (naive datetimes are UTC)."""
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


# --- the column ----------------------------------------------------------------------------


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
            raise _invalid(f"Expected a boolean ({allowed}).")
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
            raise _invalid("Must be a finite number.")
        _, digits, exponent = value.normalize().as_tuple()
        assert isinstance(exponent, int)
        places = max(-exponent, 0)
        whole = max(len(digits) + exponent, 0) if value else 0
        if self.decimal_places is not None and places > self.decimal_places:
            raise _invalid(f"At most {self.decimal_places} digits after the decimal mark.")
        if self.max_digits is not None and whole > self.max_digits - (self.decimal_places or 0):
            raise _invalid(f"At most {self.max_digits} digits in all.")

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
            raise _invalid("Not a valid number.") from None
        self.check(text, value)
        return canonical_text(value)
