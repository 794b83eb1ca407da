"""Importer declarations: a YAML or JSON file whose ``schema`` is a Frictionless Table Schema,
plus Conveyor's own keys. The importer's name is the file's stem::

    table: products            # target table; "schema.table" allowed
    mode: upsert               # default mode: upsert | insert (upsert needs a primaryKey)
    roles: [submitter]         # who may run it (role names) ...
    scopes: [imports:products] # ... or API key scopes; either grants it
    aliases: {updated_at: ["Updated At", "last_update"]}
    trimWhitespace: true       # strip surrounding whitespace of string cells (default false)
    description: Product catalogue rows, upserted by sku.
    schema:
      fields:
        - {name: sku, type: string, constraints: {required: true, maxLength: 64}}
        - {name: price, type: number, decimalPlaces: 2, maxDigits: 12,
           constraints: {minimum: 0}}
      primaryKey: [sku]
      missingValues: [""]

Conveyor's field keys: ``decimalPlaces`` and ``maxDigits`` (a ``number`` field's digits after
the decimal mark, and in all; together they make the column ``numeric(maxDigits,
decimalPlaces)``). Unknown keys are refused rather than ignored: a typo must not silently
drop a constraint.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from core.errors import InvalidRequest
from core.imports.cell_values import CellInvalid, NumberSyntax, comparable
from core.imports.declaration_spec import DeclarationSpec, FieldSpec, shape_error
from core.imports.field_types import (
    DEFAULT_FALSE,
    DEFAULT_TRUE,
    ORDERED,
    SIZED,
    STRING_FORMATS,
    TEMPORAL,
    Column,
    FieldType,
)
from core.imports.importer import WRITTEN_AT, Importer

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
SCOPE = re.compile(r"[A-Za-z0-9_.:*-]{1,100}")
SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 1 << 20
IDENTIFIER_BYTES = 63  # PostgreSQL silently truncates longer identifiers
KEY_TYPES = (FieldType.string, FieldType.integer, FieldType.year, FieldType.date)
RESERVED_COLUMNS = (WRITTEN_AT, "conveyor_row")
# Conveyor's own tables: an importer must never be able to write them.
PLATFORM_TABLES = ("jobs", "job_events", "api_keys", "import_errors", "alembic_version")


class InvalidDeclaration(InvalidRequest):
    """An importer declaration is not valid."""

    code = "invalid_declaration"


class _Problem(ValueError):
    """One thing wrong with a declaration, said at a place (``where``)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")


def _field_label(index: int, spec: FieldSpec) -> str:
    return f"schema.fields[{index}] ({spec.name})"


def _identifier(text: str, what: str) -> None:
    if "\x00" in text or '"' in text or not text or len(text.encode()) > IDENTIFIER_BYTES:
        raise _Problem(what, f"{text!r} must be 1-{IDENTIFIER_BYTES} bytes without quotes")


def _check_table(table: str) -> None:
    parts = table.split(".")
    if len(parts) > 2:
        raise _Problem("table", f"{table!r}: write it as name or schema.name")
    for part in parts:
        _identifier(part, "table")
    schema, name = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])
    if name in PLATFORM_TABLES and schema in (None, "public"):
        raise _Problem("table", f"{table!r} is one of Conveyor's own tables")


def _format(spec: FieldSpec, where: str) -> str:
    fmt = spec.format
    if spec.type is FieldType.string and fmt in STRING_FORMATS:
        return fmt
    if spec.type in TEMPORAL and fmt in ("default", "any"):
        return fmt
    if spec.type in TEMPORAL and "%" in fmt:
        pattern = fmt.removeprefix("fmt:")
        sample = dt.datetime(2001, 2, 3, 4, 5, 6)
        try:
            dt.datetime.strptime(sample.strftime(pattern), pattern)
        except ValueError as error:
            raise _Problem(where, f"format {fmt!r} is not a usable pattern ({error})") from None
        return fmt
    if fmt == "default":
        return fmt
    raise _Problem(where, f"format {fmt!r} is not defined for type {spec.type.value}")


def _type_keys(spec: FieldSpec, where: str) -> None:
    """Keys that belong to some types only."""
    allowed = {
        "true_values": (FieldType.boolean,),
        "false_values": (FieldType.boolean,),
        "decimal_char": (FieldType.number,),
        "group_char": (FieldType.number, FieldType.integer),
        "bare_number": (FieldType.number, FieldType.integer),
        "decimal_places": (FieldType.number,),
        "max_digits": (FieldType.number,),
    }
    for key, types in allowed.items():
        if getattr(spec, key) is not None and spec.type not in types:
            alias = FieldSpec.model_fields[key].alias
            raise _Problem(where, f"{alias} does not apply to type {spec.type.value}")
    c = spec.constraints
    if (c.min_length is not None or c.max_length is not None) and spec.type not in SIZED:
        raise _Problem(where, f"minLength/maxLength do not apply to type {spec.type.value}")
    if (c.minimum is not None or c.maximum is not None) and spec.type not in ORDERED:
        raise _Problem(where, f"minimum/maximum do not apply to type {spec.type.value}")


def _number_syntax(spec: FieldSpec, where: str) -> NumberSyntax:
    syntax = NumberSyntax(
        decimal_char=spec.decimal_char if spec.decimal_char is not None else ".",
        group_char=spec.group_char or "",
        bare_number=spec.bare_number if spec.bare_number is not None else True,
    )
    if len(syntax.decimal_char) != 1 or len(syntax.group_char) > 1:
        raise _Problem(where, "decimalChar must be one character, groupChar at most one")
    if syntax.decimal_char == syntax.group_char:
        raise _Problem(where, "decimalChar and groupChar must differ")
    places, digits = spec.decimal_places, spec.max_digits
    if places is not None and digits is not None and places > digits:
        raise _Problem(where, "decimalPlaces cannot exceed maxDigits")
    return syntax


def _typed(base: Column, raw: Any, where: str, what: str) -> Any:
    """A constraint value (minimum, maximum, an enum item) read with the field's parser."""
    if isinstance(raw, bool) and base.type is not FieldType.boolean:
        raise _Problem(where, f"{what} {raw!r} is not a {base.type.value}")
    if isinstance(raw, dt.date | dt.time):  # YAML reads unquoted dates itself
        raw = raw.isoformat()
    if base.type in (FieldType.object, FieldType.array):
        text = json.dumps(raw)
    elif isinstance(raw, bool):
        text = base.true_values[0] if raw else base.false_values[0]
    else:
        text = str(raw)
    try:
        return base.parse(text)
    except CellInvalid as error:
        raise _Problem(where, f"{what} {raw!r}: {error.message}") from None


def _column(index: int, spec: FieldSpec, *, trim: bool, missing: tuple[str, ...]) -> Column:
    where = _field_label(index, spec)
    _identifier(spec.name, where)
    if spec.name in RESERVED_COLUMNS:
        raise _Problem(where, f"the column name {spec.name!r} is reserved by Conveyor")
    fmt = _format(spec, where)
    _type_keys(spec, where)
    syntax = _number_syntax(spec, where)
    c = spec.constraints
    base = Column(
        name=spec.name,
        type=spec.type,
        format=fmt,
        trim=trim,
        true_values=tuple(spec.true_values or DEFAULT_TRUE),
        false_values=tuple(spec.false_values or DEFAULT_FALSE),
        number_syntax=syntax,
    )
    if not set(base.true_values).isdisjoint(base.false_values):
        raise _Problem(where, "trueValues and falseValues overlap")
    if c.pattern is not None:
        try:
            re.compile(c.pattern)
        except re.error as error:
            raise _Problem(where, f"pattern {c.pattern!r} is not a valid regex ({error})") from None
    minimum = None if c.minimum is None else _typed(base, c.minimum, where, "minimum")
    maximum = None if c.maximum is None else _typed(base, c.maximum, where, "maximum")
    if minimum is not None and maximum is not None and comparable(minimum) > comparable(maximum):
        raise _Problem(where, "minimum is greater than maximum")
    if c.min_length is not None and c.max_length is not None and c.min_length > c.max_length:
        raise _Problem(where, "minLength is greater than maxLength")
    enum = (
        None
        if c.enum is None
        else tuple(comparable(_typed(base, v, where, "enum value")) for v in c.enum)
    )
    return Column(
        name=spec.name,
        type=spec.type,
        format=fmt,
        required=c.required,
        unique=c.unique,
        description=spec.description or spec.title,
        trim=trim,
        missing_values=missing,
        min_length=c.min_length,
        max_length=c.max_length,
        minimum=minimum,
        maximum=maximum,
        pattern=c.pattern,
        enum=enum,
        max_digits=spec.max_digits,
        decimal_places=spec.decimal_places,
        true_values=base.true_values,
        false_values=base.false_values,
        number_syntax=syntax,
    )


def _key(spec: DeclarationSpec, columns: list[Column]) -> tuple[str, ...]:
    raw = spec.table_schema.primary_key
    key = (raw,) if isinstance(raw, str) else tuple(raw or ())
    by_name = {column.name: column for column in columns}
    for name in key:
        column = by_name.get(name)
        if column is None:
            raise _Problem("schema.primaryKey", f"{name!r} is not a field")
        if column.type not in KEY_TYPES or column.format == "binary":
            raise _Problem(
                "schema.primaryKey",
                f"{name!r} is a {column.type.value}; key fields must be "
                + ", ".join(t.value for t in KEY_TYPES),
            )
    if len(set(key)) != len(key):
        raise _Problem("schema.primaryKey", "a field is listed twice")
    return key


def _aliases(spec: DeclarationSpec, names: set[str]) -> dict[str, tuple[str, ...]]:
    aliases: dict[str, tuple[str, ...]] = {}
    for name, value in spec.aliases.items():
        if name not in names:
            raise _Problem("aliases", f"{name!r} is not a field")
        aliases[name] = (value,) if isinstance(value, str) else tuple(value)
    return aliases


def _build(name: str, spec: DeclarationSpec) -> Importer:
    _check_table(spec.table)
    missing = tuple(spec.table_schema.missing_values)
    trim = spec.trim_whitespace
    columns = [
        _column(i, f, trim=trim, missing=missing) for i, f in enumerate(spec.table_schema.fields)
    ]
    names = [column.name for column in columns]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise _Problem("schema.fields", f"{', '.join(map(repr, doubled))} declared twice")
    key = _key(spec, columns)
    # Table Schema: primary key fields are required.
    columns = [replace(c, required=True) if c.name in key else c for c in columns]
    mode = spec.mode or ("upsert" if key else "insert")
    if mode == "upsert" and not key:
        raise _Problem("mode", "upsert needs a schema.primaryKey (or use mode: insert)")
    for scope in spec.scopes:
        if SCOPE.fullmatch(scope) is None:
            raise _Problem("scopes", f"{scope!r}: use letters, digits and _ . : - *")
    try:
        return Importer(
            name=name,
            table=spec.table,
            mode=mode,
            key=key,
            columns=tuple(columns),
            roles=frozenset(spec.roles),
            scopes=frozenset(spec.scopes),
            aliases=_aliases(spec, set(names)),
            missing_values=missing,
            description=spec.description,
        )
    except ValueError as error:
        raise _Problem("aliases", str(error)) from None


def parse_declaration(name: str, data: Any, *, source: str | None = None) -> Importer:
    """The importer declared by ``data`` (a parsed YAML/JSON document) under ``name``."""
    label = source or name
    if NAME.fullmatch(name) is None:
        raise InvalidDeclaration(
            f"{label}: the importer name {name!r} (the file's stem) must be lowercase letters, "
            "digits, _ and -, at most 63 characters"
        )
    if not isinstance(data, Mapping):
        raise InvalidDeclaration(f"{label}: the declaration must be a mapping (an object)")
    try:
        spec = DeclarationSpec.model_validate(data)
    except ValidationError as error:
        raise InvalidDeclaration(f"{label}: {shape_error(error, data)}") from None
    try:
        return _build(name, spec)
    except _Problem as problem:
        raise InvalidDeclaration(f"{label}: {problem}") from None


def read_declaration(path: Path) -> Importer:
    """Load and validate one declaration file (YAML or JSON; the name is the file's stem)."""
    if path.suffix not in SUFFIXES:
        raise InvalidDeclaration(f"{path}: a declaration is a .yaml, .yml or .json file")
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise InvalidDeclaration(f"{path}: cannot read it ({error.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise InvalidDeclaration(f"{path}: larger than {MAX_FILE_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InvalidDeclaration(f"{path}: not valid {path.suffix[1:].upper()} ({first})") from None
    return parse_declaration(path.stem, data, source=str(path))
