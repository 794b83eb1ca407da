"""What an importer is once its declaration is read: a target table, a mode, its key, its
columns (``core.imports.field_types.Column``), header aliases, and who may run it."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from core.api_keys import Principal, Role
from core.imports.field_types import Column

Mode = Literal["upsert", "insert"]
WRITTEN_AT = "imported_at"
COPY_NULL = "\\N"  # COPY's own NULL marker, when an empty cell is a value (an empty string)


def normalise_header(name: str) -> str:
    """Header matching ignores case and surrounding whitespace; inner runs of whitespace
    match an underscore ("Updated At" is ``updated_at``)."""
    return re.sub(r"\s+", "_", name.strip().casefold())


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Importer:
    """A declared importer. ``table`` is ``name`` or ``schema.name``; ``key`` is the
    declaration's primaryKey (empty: insert only)."""

    name: str
    table: str
    mode: Mode
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    roles: frozenset[Role] = frozenset()
    scopes: frozenset[str] = frozenset()
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    missing_values: tuple[str, ...] = ("",)
    description: str = ""
    # normalised header name (field names and aliases) -> field name
    headers: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        headers: dict[str, str] = {}
        for column in self.columns:
            for name in (column.name, *self.aliases.get(column.name, ())):
                normal = normalise_header(name)
                if headers.setdefault(normal, column.name) != column.name:
                    raise ValueError(
                        f"header {name!r} would match both {headers[normal]!r} and "
                        f"{column.name!r} (matching ignores case and whitespace)"
                    )
        object.__setattr__(self, "headers", headers)

    @property
    def schema_name(self) -> str | None:
        return self.table.split(".", 1)[0] if "." in self.table else None

    @property
    def table_name(self) -> str:
        return self.table.split(".", 1)[-1]

    @property
    def qualified_table(self) -> str:
        """The table as SQL: each part quoted, so names are taken exactly as declared."""
        schema = self.schema_name
        name = quote_ident(self.table_name)
        return f"{quote_ident(schema)}.{name}" if schema else name

    @property
    def stage_table(self) -> str:
        """The TEMP staging table's name: per target table, always a valid identifier."""
        digest = hashlib.sha256(self.table.encode()).hexdigest()[:16]
        return quote_ident(f"conveyor_stage_{digest}")

    @property
    def copy_null(self) -> str:
        """COPY's NULL marker: '' while an empty cell means "missing" (the default)."""
        return "" if "" in self.missing_values else COPY_NULL

    @property
    def unique_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.unique and (c.name,) != self.key)

    def column(self, name: str) -> Column:
        return next(column for column in self.columns if column.name == name)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns if column.required)

    def may_run(self, principal: Principal) -> bool:
        """Admins run every importer; others need a listed role (or a lower one: roles
        are ranked submitter < operator < admin) or one of the listed API key scopes."""
        if principal.role is Role.admin:
            return True
        if any(principal.role.allows(role) for role in self.roles):
            return True
        return not self.scopes.isdisjoint(principal.scopes)

    @staticmethod
    def may_read_table(principal: Principal) -> bool:
        """Who may learn what the target table holds (e.g. which keys exist): operators
        and admins, who see every job anyway."""
        return principal.role.allows(Role.operator)
