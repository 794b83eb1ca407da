"""The shape of an importer declaration file: pydantic models of its keys (a Frictionless
Table Schema under ``schema``, plus Conveyor's own), which refuse unknown keys, and a readable
account of what does not fit. What the keys *mean* is core.imports.declaration's business."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

from core.api_keys import Role
from core.imports.field_types import FieldType

MAX_FIELDS = 1_000


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ConstraintsSpec(_Spec):
    required: bool = False
    unique: bool = False
    minimum: Any = None
    maximum: Any = None
    min_length: NonNegativeInt | None = Field(default=None, alias="minLength")
    max_length: NonNegativeInt | None = Field(default=None, alias="maxLength")
    pattern: str | None = None
    enum: list[Any] | None = Field(default=None, min_length=1)


class FieldSpec(_Spec):
    name: str = Field(min_length=1)
    type: FieldType = FieldType.string
    format: str = "default"
    title: str | None = None
    description: str | None = None
    example: Any = None
    rdf_type: str | None = Field(default=None, alias="rdfType")
    constraints: ConstraintsSpec = Field(default_factory=ConstraintsSpec)
    true_values: list[str] | None = Field(default=None, alias="trueValues", min_length=1)
    false_values: list[str] | None = Field(default=None, alias="falseValues", min_length=1)
    decimal_char: str | None = Field(default=None, alias="decimalChar")
    group_char: str | None = Field(default=None, alias="groupChar")
    bare_number: bool | None = Field(default=None, alias="bareNumber")
    decimal_places: NonNegativeInt | None = Field(default=None, alias="decimalPlaces")
    max_digits: int | None = Field(default=None, alias="maxDigits", ge=1, le=1000)


class SchemaSpec(_Spec):
    fields: list[FieldSpec] = Field(min_length=1, max_length=MAX_FIELDS)
    primary_key: list[str] | str | None = Field(default=None, alias="primaryKey")
    missing_values: list[str] = Field(default=[""], alias="missingValues")


class DeclarationSpec(_Spec):
    table: str
    mode: Literal["upsert", "insert"] | None = None
    roles: list[Role] = []
    scopes: list[str] = []
    aliases: dict[str, list[str] | str] = {}
    description: str = ""
    trim_whitespace: bool = Field(default=False, alias="trimWhitespace")
    table_schema: SchemaSpec = Field(alias="schema")


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    """A readable path such as ``schema.fields[2] (price).constraints.minimum``."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            entry = node[item] if isinstance(node, list) and item < len(node) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            label = f"[{item}]" + (f" ({name})" if isinstance(name, str) else "")
            parts[-1] += label
        else:
            parts.append(str(item))
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts)


def shape_error(error: ValidationError, data: Any) -> str:
    problems = []
    for item in error.errors(include_url=False)[:10]:
        where = _where(tuple(item["loc"]), data)
        if item["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key")
        else:
            problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)
