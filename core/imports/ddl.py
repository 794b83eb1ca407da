"""The importer's target table: the DDL a declaration implies, creating the table when it does
not exist, and refusing to load into an existing table that does not fit the declaration.

Plain DDL in the application's own database, nothing a non-superuser owner cannot do: the
schema of a ``schema.table`` must exist already. Creation runs under a transaction-scoped
advisory lock on the table's name, so two imports starting at once do not race.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg.errors
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from core.imports.failures import ImportFailed
from core.imports.failures import ImportFailureCode as Failure
from core.imports.field_types import Column, FieldType
from core.imports.importer import WRITTEN_AT, Importer, quote_ident

INT_RANGES = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}


def column_type(column: Column) -> str:
    """The PostgreSQL type a created table gives a field."""
    kind = column.type
    if kind is FieldType.string:
        return {"uuid": "uuid", "binary": "bytea"}.get(column.format, "text")
    if kind is FieldType.number:
        if column.max_digits is not None:
            return f"numeric({column.max_digits},{column.decimal_places or 0})"
        return "numeric"
    return {
        FieldType.integer: "bigint",
        FieldType.boolean: "boolean",
        FieldType.date: "date",
        FieldType.datetime: "timestamp with time zone",
        FieldType.time: "time without time zone",
        FieldType.year: "integer",
        FieldType.object: "jsonb",
        FieldType.array: "jsonb",
    }[kind]


def create_table_sql(importer: Importer) -> str:
    """``CREATE TABLE`` for the declaration: its fields (NOT NULL when required), primary
    key, unique fields, and ``imported_at`` (set whenever an import writes the row)."""
    lines = [
        f"    {quote_ident(c.name)} {column_type(c)}{' NOT NULL' if c.required else ''}"
        for c in importer.columns
    ]
    lines.append(f"    {quote_ident(WRITTEN_AT)} timestamp with time zone NOT NULL DEFAULT now()")
    if importer.key:
        lines.append(f"    PRIMARY KEY ({', '.join(map(quote_ident, importer.key))})")
    lines += [f"    UNIQUE ({quote_ident(name)})" for name in importer.unique_columns]
    return f"CREATE TABLE {importer.qualified_table} (\n" + ",\n".join(lines) + "\n)"


@dataclass(frozen=True)
class TableColumn:
    name: str
    type: str  # format_type(), e.g. "numeric(12,2)", "character varying(64)"
    not_null: bool
    has_default: bool


@dataclass(frozen=True)
class TableInfo:
    """What the loader needs to know of the checked table."""

    created: bool
    written_at: str | None  # the imported_at column, when the table has one


_COLUMNS = sa.text(
    "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
    "a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '' "
    "FROM pg_attribute a WHERE a.attrelid = CAST(:oid AS oid) AND a.attnum > 0 "
    "AND NOT a.attisdropped ORDER BY a.attnum"
)
_UNIQUE_INDEXES = sa.text(
    "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i "
    "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
    "WHERE i.indrelid = CAST(:oid AS oid) AND i.indisunique AND i.indpred IS NULL "
    "AND i.indexprs IS NULL GROUP BY i.indexrelid"
)


def _incompatible(importer: Importer, column: str | None, problem: str) -> ImportFailed:
    where = {"table": importer.table, **({"column": column} if column else {})}
    return ImportFailed(
        Failure.incompatible_table,
        f"Table {importer.table} does not fit importer {importer.name!r}: {problem}. "
        "Change the table or the declaration; nothing was loaded.",
        where=where,
    )


def _accepts(column: Column, pg_type: str) -> str | None:
    """Why a column of ``pg_type`` cannot hold the field's values (None: it can)."""
    kind = column.type
    if kind is FieldType.integer or kind is FieldType.year:
        span = INT_RANGES.get(pg_type)
        if span is None:
            return "expected an integer type"
        low = column.minimum if column.minimum is not None else INT_RANGES["bigint"][0]
        high = column.maximum if column.maximum is not None else INT_RANGES["bigint"][1]
        if kind is FieldType.year:
            low, high = max(low, 0), min(high, 9999)
        if low < span[0] or high > span[1]:
            return f"{pg_type} holds {span[0]}..{span[1]}; declare minimum/maximum within it"
        return None
    if kind is FieldType.number:
        return _numeric_fits(column, pg_type)
    if kind is FieldType.string and column.format not in ("uuid", "binary"):
        return _text_fits(column, pg_type)
    wanted = column_type(column)
    also = {"jsonb": ("json",), "uuid": ("text",)}.get(wanted, ())
    return None if pg_type in (wanted, *also) else f"expected {wanted}"


def _numeric_fits(column: Column, pg_type: str) -> str | None:
    if pg_type == "numeric":
        return None
    match = re.fullmatch(r"numeric\((\d+),(\d+)\)", pg_type)
    if match is None:
        return "expected numeric"
    precision, scale = int(match[1]), int(match[2])
    places, digits = column.decimal_places, column.max_digits
    if places is None or digits is None or places > scale or digits - places > precision - scale:
        return (
            f"{pg_type} needs the field to declare decimalPlaces <= {scale} and maxDigits "
            f"with at most {precision - scale} digits before the decimal mark"
        )
    return None


def _text_fits(column: Column, pg_type: str) -> str | None:
    if pg_type == "text":
        return None
    match = re.fullmatch(r"character varying\((\d+)\)", pg_type)
    if match is None:
        return "expected text" if pg_type != "character varying" else None
    if column.max_length is None or column.max_length > int(match[1]):
        return f"{pg_type} needs the field to declare maxLength <= {match[1]}"
    return None


def _check_columns(importer: Importer, columns: dict[str, TableColumn]) -> None:
    for field in importer.columns:
        found = columns.get(field.name)
        if found is None:
            raise _incompatible(importer, field.name, f"it has no column {field.name!r}")
        problem = _accepts(field, found.type)
        if problem:
            raise _incompatible(
                importer, field.name, f"column {field.name!r} is {found.type}: {problem}"
            )
        if found.not_null and not field.required:
            raise _incompatible(
                importer, field.name, f"column {field.name!r} is NOT NULL but the field is optional"
            )
    declared = {field.name for field in importer.columns}
    for column in columns.values():
        if column.name not in declared and column.not_null and not column.has_default:
            raise _incompatible(
                importer, column.name, f"column {column.name!r} is NOT NULL without a default"
            )


def _check_keys(importer: Importer, unique_sets: list[set[str]]) -> None:
    if importer.key and set(importer.key) not in unique_sets:
        raise _incompatible(
            importer,
            None,
            f"no primary key or unique index on exactly ({', '.join(importer.key)})",
        )
    for name in importer.unique_columns:
        if {name} not in unique_sets:
            raise _incompatible(importer, name, f"no unique index on ({name}) alone")


def _inspect(session: Session, importer: Importer, oid: int) -> TableInfo:
    rows = session.execute(_COLUMNS, {"oid": oid}).all()
    columns = {row[0]: TableColumn(row[0], row[1], row[2], row[3]) for row in rows}
    _check_columns(importer, columns)
    unique_sets = [set(row[0]) for row in session.execute(_UNIQUE_INDEXES, {"oid": oid})]
    _check_keys(importer, unique_sets)
    written = columns.get(WRITTEN_AT)
    if written is not None and (
        written.type != "timestamp with time zone" or not written.has_default
    ):
        raise _incompatible(
            importer, WRITTEN_AT, f"{WRITTEN_AT} must be timestamptz with a default (now())"
        )
    return TableInfo(created=False, written_at=WRITTEN_AT if written else None)


def _oid(session: Session, importer: Importer) -> int | None:
    oid: int | None = session.scalar(
        sa.text(
            "SELECT c.oid FROM pg_class c WHERE c.oid = to_regclass(:name) "
            "AND c.relkind IN ('r', 'p')"
        ),
        {"name": importer.qualified_table},
    )
    return oid


def _create(session: Session, importer: Importer) -> None:
    schema = importer.schema_name
    if schema is not None and not session.scalar(
        sa.text("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = :s)"), {"s": schema}
    ):
        raise ImportFailed(
            Failure.table_unavailable,
            f"Schema {schema!r} does not exist; create it before importing into {importer.table}.",
            where={"table": importer.table},
        )
    try:
        with session.begin_nested():
            session.execute(sa.text(create_table_sql(importer)))
    except sa_exc.ProgrammingError as error:
        if isinstance(error.orig, psycopg.errors.InsufficientPrivilege):
            raise ImportFailed(
                Failure.table_unavailable,
                f"Conveyor may not create table {importer.table} (permission denied).",
                where={"table": importer.table},
            ) from error
        raise


def ensure_table(session: Session, importer: Importer) -> TableInfo:
    """Create the table if it does not exist, else check that it fits the declaration
    (ImportFailed ``incompatible_table`` naming the column when it does not)."""
    session.execute(
        sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
        {"name": f"conveyor.importer_table:{importer.qualified_table}"},
    )
    oid = _oid(session, importer)
    if oid is not None:
        return _inspect(session, importer, oid)
    relation = session.scalar(
        sa.text("SELECT to_regclass(:name)"), {"name": importer.qualified_table}
    )
    if relation is not None:
        raise _incompatible(importer, None, "it is not a table (a view or another relation)")
    _create(session, importer)
    oid = _oid(session, importer)
    assert oid is not None
    info = _inspect(session, importer, oid)
    return TableInfo(created=True, written_at=info.written_at)
