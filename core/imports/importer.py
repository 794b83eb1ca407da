"""What an importer is: a target table, its key column(s) and a pydantic row model.

The row model is the authority on what a valid row is. ``Column`` describes each of its fields
in plain terms (kind, required, bounds) for ``GET /v1/importers`` and for the loader, which
may check common, fully described shapes with a faster equivalent test (see
``jobs/imports/fast_checks.py``); anything else is validated by the model's own field.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import types
import typing
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import annotated_types
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, StringConstraints, TypeAdapter
from pydantic.fields import FieldInfo


class ColumnKind(enum.StrEnum):
    string = "string"
    decimal = "decimal"
    integer = "integer"
    datetime = "datetime"
    date = "date"
    boolean = "boolean"
    other = "other"


_KINDS: dict[type, ColumnKind] = {
    str: ColumnKind.string,
    Decimal: ColumnKind.decimal,
    int: ColumnKind.integer,
    dt.datetime: ColumnKind.datetime,
    dt.date: ColumnKind.date,
    bool: ColumnKind.boolean,
}
_DECIMAL_BOUNDS = {"max_digits", "decimal_places"}


@dataclass(frozen=True)
class Column:
    """One field of a row model, described in plain terms."""

    name: str
    kind: ColumnKind
    required: bool
    description: str | None
    # Validates one non-blank cell exactly as the row model validates this field.
    adapter: TypeAdapter[Any] = field(repr=False, compare=False)
    strips_whitespace: bool = False
    min_length: int | None = None
    max_length: int | None = None
    ge: int | Decimal | None = None
    le: int | Decimal | None = None
    max_digits: int | None = None
    decimal_places: int | None = None
    # False when the field has a constraint not described above (a pattern, gt, a custom
    # type...): then only the model's own validator may judge a value.
    fully_described: bool = True


def _unwrap(annotation: Any) -> tuple[Any, bool, list[Any]]:
    """(base type, allows None, metadata nested in Annotated) of a field annotation."""
    metadata: list[Any] = []
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        optional = len(members) < len(typing.get_args(annotation))
        annotation = members[0] if len(members) == 1 else annotation
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *nested = typing.get_args(annotation)
        metadata.extend(nested)
    return annotation, optional, metadata


def _constraints(metadata: list[Any]) -> tuple[dict[str, Any], bool]:
    """The described bounds in ``metadata``, and whether every item was understood."""
    found: dict[str, Any] = {}
    understood = True
    for item in metadata:
        if isinstance(item, annotated_types.MinLen):
            found["min_length"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            found["max_length"] = item.max_length
        elif isinstance(item, annotated_types.Ge):
            found["ge"] = item.ge
        elif isinstance(item, annotated_types.Le):
            found["le"] = item.le
        elif isinstance(item, StringConstraints):
            understood &= _string_constraints(item, found)
        elif set(getattr(item, "__dict__", None) or {"?"}) <= _DECIMAL_BOUNDS:
            # pydantic's own metadata object for max_digits / decimal_places
            found.update({k: v for k, v in vars(item).items() if v is not None})
        else:
            understood = False
    return found, understood


def _string_constraints(item: StringConstraints, found: dict[str, Any]) -> bool:
    for name in ("min_length", "max_length"):
        if getattr(item, name) is not None:
            found[name] = getattr(item, name)
    if item.strip_whitespace:
        found["strips_whitespace"] = True
    return not (item.to_upper or item.to_lower or item.strict or item.pattern or item.ascii_only)


def describe_field(name: str, info: FieldInfo, config: ConfigDict) -> Column:
    base, optional, nested = _unwrap(info.annotation)
    bounds, understood = _constraints([*info.metadata, *nested])
    kind = _KINDS.get(base, ColumnKind.other) if isinstance(base, type) else ColumnKind.other
    strips = bool(config.get("str_strip_whitespace")) or bounds.pop("strips_whitespace", False)
    required = info.is_required()
    if not required and not optional:
        raise ValueError(f"optional field {name!r} must allow None (a blank cell is None)")
    metadata = [*info.metadata, *nested]
    target: Any = typing.Annotated[(base, *metadata)] if metadata else base
    return Column(
        name=name,
        kind=kind,
        required=required,
        description=info.description,
        strips_whitespace=strips,
        fully_described=understood and kind is not ColumnKind.other,
        adapter=TypeAdapter(target, config=ConfigDict(str_strip_whitespace=strips)),
        **bounds,
    )


def normalise_header(name: str) -> str:
    """Header matching ignores case and surrounding whitespace; inner runs of whitespace
    match an underscore ("Updated At" is ``updated_at``)."""
    return re.sub(r"\s+", "_", name.strip().casefold())


@dataclass(frozen=True)
class Importer:
    """A registered schema: CSV rows validated by ``row_model`` are upserted into ``table``
    by ``key``. ``written_at_column`` (if any) is set to now() whenever a row is written."""

    name: str
    description: str
    table: sa.Table
    key: tuple[str, ...]
    row_model: type[BaseModel]
    written_at_column: str | None = None
    columns: tuple[Column, ...] = field(init=False)

    def __post_init__(self) -> None:
        config = self.row_model.model_config
        columns = tuple(
            describe_field(name, info, config) for name, info in self.row_model.model_fields.items()
        )
        object.__setattr__(self, "columns", columns)
        self._check(columns)

    def _check(self, columns: tuple[Column, ...]) -> None:
        """Refuse a definition the loader could not honour, at import time."""
        decorators = self.row_model.__pydantic_decorators__
        if decorators.field_validators or decorators.model_validators:
            raise ValueError(f"{self.name}: row models may only use per-field constraints")
        by_name = {column.name: column for column in columns}
        missing = [name for name in by_name if name not in self.table.c]
        if missing:
            raise ValueError(f"{self.name}: fields {missing} are not columns of {self.table}")
        written_at = self.written_at_column
        if written_at is not None and self.table.c[written_at].server_default is None:
            # Rows may be COPYed straight into the table: the default is what sets it then.
            raise ValueError(f"{self.name}: {written_at!r} needs a server default (now())")
        for name in self.key:
            column = by_name.get(name)
            if column is None or not column.required or column.kind is not ColumnKind.string:
                raise ValueError(f"{self.name}: key {name!r} must be a required string field")

    def column(self, name: str) -> Column:
        return next(column for column in self.columns if column.name == name)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns if column.required)
