"""Shapes of /v1/imports, /v1/importers and /v1/jobs/{id}/errors."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.imports.importer import Importer
from core.imports.options import ImportParams, StoredFile, parse_error_threshold
from core.models import ImportRowError

# The multipart form, documented for OpenAPI (the route parses the stream itself).
IMPORT_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file", "importer"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "The CSV file."},
        "importer": {"type": "string", "description": "Importer name, e.g. products."},
        "dry_run": {"type": "boolean", "default": False, "description": "Validate only."},
        "mode": {"type": "string", "enum": ["upsert", "insert"], "default": "upsert"},
        "error_threshold": {
            "type": "string",
            "description": "Max rejected rows (e.g. 100) or fraction (0.05 or 5%).",
        },
        "delimiter": {"type": "string", "description": "One character; sniffed if absent."},
        "encoding": {"type": "string", "description": "Default UTF-8 (with or without BOM)."},
    },
}


class ImportForm(BaseModel):
    """The form fields of POST /v1/imports besides ``file``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    importer: str = Field(min_length=1, max_length=100)
    dry_run: bool = False
    mode: Literal["upsert", "insert"] = "upsert"
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
        # A tab delimiter is whitespace: keep it; other blank values mean "not given".
        if isinstance(value, str) and value != "\t" and not value.strip():
            return None
        return value

    def params(self, upload: StoredFile) -> ImportParams:
        """The job's params; ImportParams checks delimiter, encoding and threshold."""
        return ImportParams(upload=upload, **self.model_dump())


class ImporterColumnOut(BaseModel):
    name: str
    type: str = Field(examples=["string", "decimal", "integer", "datetime"])
    required: bool
    description: str | None
    max_length: int | None = None
    min: float | None = Field(default=None, description="Smallest allowed value.")
    max: float | None = Field(default=None, description="Largest allowed value.")
    decimal_places: int | None = None


class ImporterOut(BaseModel):
    name: str
    description: str
    table: str
    key: list[str]
    columns: list[ImporterColumnOut]

    @classmethod
    def from_importer(cls, importer: Importer) -> ImporterOut:
        return cls(
            name=importer.name,
            description=importer.description,
            table=importer.table.name,
            key=list(importer.key),
            columns=[
                ImporterColumnOut(
                    name=column.name,
                    type=column.kind.value,
                    required=column.required,
                    description=column.description,
                    max_length=column.max_length,
                    min=None if column.ge is None else float(column.ge),
                    max=None if column.le is None else float(column.le),
                    decimal_places=column.decimal_places,
                )
                for column in importer.columns
            ],
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
