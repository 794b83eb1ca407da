"""One CSV cell's text as a value, and a value back as the text PostgreSQL loads: the parsers
of Table Schema's types and formats (``core.imports.field_types.Column`` picks one per
declared field), and canonical text."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from core.imports.row_errors import RowErrorCode

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


def temporal_parser(kind: str, fmt: str) -> Callable[[str], Any]:
    """The parser of a date, time or datetime field for its Table Schema format."""
    iso: dict[str, Callable[[str], Any]] = {
        "date": parse_iso_date,
        "time": parse_iso_time,
        "datetime": parse_iso_datetime,
    }
    if fmt == "default":
        return iso[kind]
    if fmt == "any":
        extra = {"date": _ANY_DATE, "time": _ANY_TIME}.get(kind, ())
        extra_dt = tuple(f"{d} %H:%M" for d in _ANY_DATE) + tuple(
            f"{d} %H:%M:%S" for d in _ANY_DATE
        )

        def any_form(text: str) -> Any:
            try:
                return iso[kind](text)
            except CellInvalid:
                found = _strptime(text, extra or extra_dt, kind)
                return _narrow(kind, found)

        return any_form
    pattern = fmt.removeprefix("fmt:")

    def by_pattern(text: str) -> Any:
        return _narrow(kind, _strptime(text, [pattern], kind))

    return by_pattern


def _narrow(kind: str, value: dt.datetime) -> Any:
    if kind == "date":
        return value.date()
    if kind == "time":
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


def parse_json(text: str, kind: str) -> Any:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise _invalid(f"Expected a JSON {kind}.") from None
    expected = dict if kind == "object" else list
    if not isinstance(value, expected):
        raise _invalid(f"Expected a JSON {kind}.")
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
