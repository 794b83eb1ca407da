"""Shapes of /v1/imports, /v1/importers and /v1/jobs/{id}/errors."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from core.imports.cell_values import canonical_text
from core.imports.field_types import Column
from core.imports.importer import Importer, Mode
from core.imports.options import ImportOptions
from core.models import ImportRowError

# The multipart form, documented for OpenAPI (the route parses the stream itself).
IMPORT_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file", "importer"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "The CSV file."},
        "importer": {"type": "string", "description": "Importer name, e.g. products."},
        "dry_run": {"type": "boolean", "default": False, "description": "Validate only."},
        "mode": {
            "type": "string",
            "enum": ["upsert", "insert"],
            "description": "Default: the importer's declared mode.",
        },
        "error_threshold": {
            "type": "string",
            "description": "Max rejected rows (e.g. 100) or fraction (0.05 or 5%).",
        },
        "delimiter": {"type": "string", "description": "One character; sniffed if absent."},
        "encoding": {"type": "string", "description": "Default UTF-8 (with or without BOM)."},
    },
}


class ImportForm(ImportOptions):
    """The form fields of POST /v1/imports besides ``file``; the options are validated by
    core (ImportOptions), as an import schedule's are."""

    importer: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    dry_run: bool = False


def _constraint(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    return canonical_text(value)


class ImporterColumnOut(BaseModel):
    name: str
    type: str = Field(examples=["string", "number", "integer", "datetime"])
    format: str = "default"
    required: bool
    unique: bool = False
    description: str | None
    constraints: dict[str, Any] = Field(
        default_factory=dict,
        description="Table Schema constraints besides required/unique (minimum, maximum, "
        "minLength, maxLength, pattern, enum) and Conveyor's decimalPlaces/maxDigits.",
    )

    @classmethod
    def from_column(cls, column: Column) -> ImporterColumnOut:
        constraints = {
            "minimum": _constraint(column.minimum),
            "maximum": _constraint(column.maximum),
            "minLength": column.min_length,
            "maxLength": column.max_length,
            "pattern": column.pattern,
            "enum": None if column.enum is None else [_constraint(v) for v in column.enum],
            "decimalPlaces": column.decimal_places,
            "maxDigits": column.max_digits,
        }
        return cls(
            name=column.name,
            type=column.type.value,
            format=column.format,
            required=column.required,
            unique=column.unique,
            description=column.description,
            constraints={k: v for k, v in constraints.items() if v is not None},
        )


class ImporterOut(BaseModel):
    name: str
    description: str
    table: str
    mode: Mode = Field(description="The mode used when a request does not give one.")
    key: list[str] = Field(description="The primaryKey; empty: insert only.")
    aliases: dict[str, list[str]] = Field(default_factory=dict)
    columns: list[ImporterColumnOut]

    @classmethod
    def from_importer(cls, importer: Importer) -> ImporterOut:
        return cls(
            name=importer.name,
            description=importer.description,
            table=importer.table,
            mode=importer.mode,
            key=list(importer.key),
            aliases={name: list(names) for name, names in importer.aliases.items()},
            columns=[ImporterColumnOut.from_column(column) for column in importer.columns],
        )


class ImporterList(BaseModel):
    items: list[ImporterOut]


class RowErrorOut(BaseModel):
    row: int = Field(description="1-based, as a spreadsheet shows it; the header is row 1.")
    column: str | None
    code: str = Field(examples=["invalid_value", "required", "wrong_field_count"])
    message: str
    value: str | None

    @classmethod
    def from_error(cls, error: ImportRowError) -> RowErrorOut:
        return cls(
            row=error.row,
            column=error.column,
            code=error.code,
            message=error.message,
            value=error.value,
        )


class RowErrorPage(BaseModel):
    items: list[RowErrorOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at end.")
