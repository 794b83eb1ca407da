"""Loading a planned batch into the importer's table, inside the unit's transaction.

Two ways in, both fed the same COPY text payload:

- **direct**: ``COPY`` straight into the table, under a savepoint. It succeeds when none of
  the batch's keys exist yet (a first import) and costs what ``psql \\copy`` costs. A unique
  violation rolls back to the savepoint and the batch takes the staged way.
- **staged**: ``COPY`` into a TEMP table (``ON COMMIT DELETE ROWS``, created once per
  connection), then one ``INSERT ... SELECT ... ON CONFLICT`` into the table. ``upsert``
  updates only rows whose values differ (``IS DISTINCT FROM``), so re-importing a file
  rewrites nothing; ``RETURNING (xmax = 0)`` tells inserted from updated rows.

Fields declared ``unique`` (besides the key): the staged way first takes out of the stage
the rows that hold a unique value another row of the table has (under another key), then
those that repeat a value of an earlier row of the batch; they are rejected as
``not_unique``. (A row may be refused for a value another row of the same batch is giving
up: the table is compared as it was before the batch.) A direct COPY that meets such a
value fails on the table's unique index and the batch takes the staged way.

After a batch that met existing keys, the next batch goes staged directly; after a staged
batch without any, direct is tried again.

``synchronous_commit = off`` for import units: a unit commits its rows together with its
checkpoint, so if PostgreSQL itself crashes and loses the last few commits, rows and
checkpoint are lost together and the next attempt redoes exactly those batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import psycopg
import psycopg.errors
import structlog
from sqlalchemy.orm import Session

from core.errors import DatabaseUnavailable
from core.imports.ddl import TableInfo
from core.imports.failures import ImportFailed
from core.imports.failures import ImportFailureCode as Failure
from core.imports.importer import Importer, quote_ident
from jobs.imports.batch_plan import Key
from jobs.imports.prepared_batch import PreparedBatch

SAVEPOINT = "conveyor_direct_copy"
ROW = "conveyor_row"  # the stage's extra column: a row's index in its batch
log = structlog.get_logger(__name__)


@dataclass
class LoadResult:
    inserted: int = 0
    changed: int = 0  # existing rows rewritten with new values
    unchanged: int = 0  # existing rows whose values were identical (not rewritten)
    existing: list[Key] = field(default_factory=list)  # insert mode: keys already present
    # rows (index in the batch) refused because a unique field's value is taken
    not_unique: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Statements:
    copy_direct: str
    copy_staged: str
    create_stage: str
    upsert: str
    insert: str
    existing: str
    # per unique field: (its name, rows repeating a value of the batch, rows taking one
    # the table holds under another key)
    unique: list[tuple[str, str, str]]


def _unique_statements(importer: Importer, stage: str, target: str) -> list[tuple[str, str, str]]:
    other_row = (
        " AND NOT ("
        + " AND ".join(f"t.{quote_ident(k)} = s.{quote_ident(k)}" for k in importer.key)
        + ")"
        if importer.key
        else ""
    )
    statements = []
    for name in importer.unique_columns:
        column = quote_ident(name)
        statements.append(
            (
                name,
                f"DELETE FROM {stage} s USING {stage} d WHERE s.{column} = d.{column} "
                f"AND s.{ROW} > d.{ROW} RETURNING s.{ROW}",
                f"DELETE FROM {stage} s WHERE EXISTS (SELECT 1 FROM {target} t "
                f"WHERE t.{column} = s.{column}{other_row}) RETURNING s.{ROW}",
            )
        )
    return statements


def _statements(importer: Importer, table: TableInfo, columns: Sequence[str]) -> _Statements:
    target = importer.qualified_table
    stage = importer.stage_table
    null = importer.copy_null
    names = ", ".join(map(quote_ident, columns))
    keys = ", ".join(map(quote_ident, importer.key))
    others = [name for name in columns if name not in importer.key]
    written = table.written_at
    insert_names, select_names = names, names
    if written is not None:
        insert_names += f", {quote_ident(written)}"
        select_names += ", now()"
    assignments = [
        f"{quote_ident(n)} = EXCLUDED.{quote_ident(n)}" for n in [*others, *filter(None, [written])]
    ]
    changed = " OR ".join(
        f"t.{quote_ident(n)} IS DISTINCT FROM EXCLUDED.{quote_ident(n)}" for n in others
    )
    on_conflict = (
        f"DO UPDATE SET {', '.join(assignments)} WHERE {changed}" if others else "DO NOTHING"
    )
    insert_into = f"INSERT INTO {target} AS t ({insert_names}) SELECT {select_names} FROM {stage}"
    key_match = " AND ".join(f"t.{quote_ident(k)} = s.{quote_ident(k)}" for k in importer.key)
    staged_names = f"{ROW}, {names}" if importer.unique_columns else names
    return _Statements(
        copy_direct=f"COPY {target} ({names}) FROM STDIN (NULL '{null}')",
        copy_staged=f"COPY {stage} ({staged_names}) FROM STDIN (NULL '{null}')",
        create_stage=(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
            f"(LIKE {target} INCLUDING DEFAULTS, {ROW} integer) ON COMMIT DELETE ROWS"
        ),
        upsert=(
            f"WITH written AS ({insert_into} ON CONFLICT ({keys}) {on_conflict} "
            "RETURNING (xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) "
            "FROM written"
        ),
        insert=(
            f"{insert_into} ON CONFLICT ({keys}) DO NOTHING RETURNING {keys}"
            if importer.key
            else insert_into
        ),
        existing=(
            f"SELECT {', '.join(f's.{quote_ident(k)}' for k in importer.key)} FROM {stage} s "
            f"WHERE EXISTS (SELECT 1 FROM {target} t WHERE {key_match})"
        ),
        unique=_unique_statements(importer, stage, target),
    )


def _key(row: tuple[Any, ...]) -> Key:
    return row[0] if len(row) == 1 else tuple(row)


def _numbered(payload: bytes) -> bytes:
    """The payload with each line's index in front (the stage's conveyor_row column)."""
    lines = payload.split(b"\n")[:-1]
    return b"".join(b"%d\t%b\n" % (index, line) for index, line in enumerate(lines))


class BulkLoader:
    """Loads batches for one import. ``reveal_table``: whether this import may learn what
    the table holds beyond its own writes (a dry run checks existing keys and taken unique
    values only then)."""

    def __init__(
        self,
        importer: Importer,
        table: TableInfo,
        columns: Sequence[str],
        *,
        mode: Literal["upsert", "insert"],
        dry_run: bool,
        reveal_table: bool = True,
    ) -> None:
        self._sql = _statements(importer, table, columns)
        self._keyed = bool(importer.key)
        self._numbered = bool(importer.unique_columns)
        self._mode = mode
        self._dry_run = dry_run
        self._reveal = reveal_table
        self._try_direct = not dry_run

    def load(self, session: Session, batch: PreparedBatch) -> LoadResult:
        """Write (or, in a dry run, only check) the batch; never commits."""
        raw = cast("psycopg.Connection[Any]", session.connection().connection.driver_connection)
        try:
            with raw.cursor() as cursor:
                # One round trip; a time without an offset is UTC.
                cursor.execute("SET LOCAL synchronous_commit = off; SET LOCAL timezone = 'UTC'")
                if not batch.size:
                    return LoadResult()
                if self._try_direct and self._copy_direct(cursor, batch.payload):
                    return LoadResult(inserted=batch.size)
                return self._staged(cursor, batch)
        except psycopg.OperationalError as error:
            if (error.sqlstate or "08").startswith("08"):
                raise DatabaseUnavailable() from error
            raise
        except (psycopg.DataError, psycopg.IntegrityError) as error:
            # Validation accepts only what PostgreSQL parses; reaching this is a bug or a
            # table that disagrees with its importer. Fail clearly rather than guess; the
            # driver's message (SQL, constraint names, values) is for the log, not the caller.
            log.error(
                "import.batch_refused",
                sqlstate=error.sqlstate,
                error=str(error),
                batch_last_row=batch.next_row - 1,
            )
            raise ImportFailed(
                Failure.load_failed,
                "The database refused a batch of rows that passed validation, so the table "
                "does not match the importer; rows before that batch stay loaded.",
                where={"last_row_of_batch": batch.next_row - 1},
            ) from error

    def _copy_direct(self, cursor: psycopg.Cursor[Any], payload: bytes) -> bool:
        cursor.execute(f"SAVEPOINT {SAVEPOINT}")
        try:
            with cursor.copy(self._sql.copy_direct) as copy:
                copy.write(payload)
        except psycopg.errors.UniqueViolation:
            cursor.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
            self._try_direct = False
            return False
        return True  # the savepoint goes with the commit: no extra round trip to release it

    def _staged(self, cursor: psycopg.Cursor[Any], batch: PreparedBatch) -> LoadResult:
        cursor.execute(self._sql.create_stage)
        with cursor.copy(self._sql.copy_staged) as copy:
            copy.write(_numbered(batch.payload) if self._numbered else batch.payload)
        not_unique = self._take_out_not_unique(cursor)
        if self._dry_run:
            check = self._mode == "insert" and self._keyed and self._reveal
            return LoadResult(
                existing=self._existing(cursor) if check else [], not_unique=not_unique
            )
        size = batch.size - len(not_unique)
        if self._mode == "insert" and not self._keyed:
            cursor.execute(self._sql.insert)
            result = LoadResult(inserted=cursor.rowcount, not_unique=not_unique)
        elif self._mode == "insert":
            new_keys = {_key(row) for row in cursor.execute(self._sql.insert)}
            taken = {index for index, _ in not_unique}
            existing = [
                key for i, key in enumerate(batch.keys) if key not in new_keys and i not in taken
            ]
            result = LoadResult(inserted=len(new_keys), existing=existing, not_unique=not_unique)
        else:
            row = cursor.execute(self._sql.upsert).fetchone()
            inserted, changed = (int(row[0]), int(row[1])) if row else (0, 0)
            result = LoadResult(inserted, changed, size - inserted - changed, not_unique=not_unique)
        # Only a batch of all-new keys makes the direct way worth trying again.
        self._try_direct = result.inserted == batch.size
        return result

    def _take_out_not_unique(self, cursor: psycopg.Cursor[Any]) -> list[tuple[int, str]]:
        """Remove from the stage the rows whose unique fields repeat a value of an earlier
        row of the batch or (when the table may be revealed) of another row of the table."""
        refused: dict[int, str] = {}
        # Writing must check the table (the insert would fail otherwise); a dry run only
        # when this import may learn what the table holds.
        check_table = self._reveal or not self._dry_run
        for name, in_batch, in_table in self._sql.unique:
            # The table first: a row taking a value another key holds goes, and then the
            # first of the remaining rows with a value keeps it.
            statements = [in_table, in_batch] if check_table else [in_batch]
            for statement in statements:
                for (index,) in cursor.execute(statement):
                    refused.setdefault(int(index), name)
        return sorted(refused.items())

    def _existing(self, cursor: psycopg.Cursor[Any]) -> list[Key]:
        return [_key(row) for row in cursor.execute(self._sql.existing)]
