"""Loading a planned batch into the importer's table, inside the unit's transaction.

Two ways in, both fed the same COPY text payload:

- **direct**: ``COPY`` straight into the table, under a savepoint. It succeeds when none of
  the batch's keys exist yet (a first import) and costs what ``psql \\copy`` costs. A unique
  violation rolls back to the savepoint and the batch takes the staged way.
- **staged**: ``COPY`` into a TEMP table (``ON COMMIT DELETE ROWS``, created once per
  connection), then one ``INSERT ... SELECT ... ON CONFLICT`` into the table. ``upsert``
  updates only rows whose values differ (``IS DISTINCT FROM``), so re-importing a file
  rewrites nothing; ``RETURNING (xmax = 0)`` tells inserted from updated rows.

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
from core.imports.failures import ImportFailed
from core.imports.failures import ImportFailureCode as Failure
from core.imports.importer import Importer
from jobs.imports.batch_plan import Key
from jobs.imports.prepared_batch import PreparedBatch

SAVEPOINT = "conveyor_direct_copy"

log = structlog.get_logger(__name__)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class LoadResult:
    inserted: int = 0
    changed: int = 0  # existing rows rewritten with new values
    unchanged: int = 0  # existing rows whose values were identical (not rewritten)
    existing: list[Key] = field(default_factory=list)  # insert mode: keys already present


@dataclass(frozen=True)
class _Statements:
    copy_direct: str
    copy_staged: str
    create_stage: str
    upsert: str
    insert: str
    existing: str


def _statements(importer: Importer, columns: Sequence[str]) -> _Statements:
    table = importer.table
    target = f"{_ident(table.schema)}.{_ident(table.name)}" if table.schema else _ident(table.name)
    stage = _ident(f"conveyor_stage_{importer.name}")
    names = ", ".join(map(_ident, columns))
    keys = ", ".join(map(_ident, importer.key))
    others = [name for name in columns if name not in importer.key]
    written = importer.written_at_column
    insert_names, select_names = names, names
    if written is not None:
        insert_names += f", {_ident(written)}"
        select_names += ", now()"
    assignments = [
        f"{_ident(n)} = EXCLUDED.{_ident(n)}" for n in [*others, *filter(None, [written])]
    ]
    changed = " OR ".join(f"t.{_ident(n)} IS DISTINCT FROM EXCLUDED.{_ident(n)}" for n in others)
    on_conflict = (
        f"DO UPDATE SET {', '.join(assignments)} WHERE {changed}" if others else "DO NOTHING"
    )
    insert_into = f"INSERT INTO {target} AS t ({insert_names}) SELECT {select_names} FROM {stage}"
    key_match = " AND ".join(f"t.{_ident(k)} = s.{_ident(k)}" for k in importer.key)
    return _Statements(
        copy_direct=f"COPY {target} ({names}) FROM STDIN (NULL '')",
        copy_staged=f"COPY {stage} ({names}) FROM STDIN (NULL '')",
        create_stage=(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
            f"(LIKE {target} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        ),
        upsert=(
            f"WITH written AS ({insert_into} ON CONFLICT ({keys}) {on_conflict} "
            "RETURNING (xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) "
            "FROM written"
        ),
        insert=f"{insert_into} ON CONFLICT ({keys}) DO NOTHING RETURNING {keys}",
        existing=(
            f"SELECT {', '.join(f's.{_ident(k)}' for k in importer.key)} FROM {stage} s "
            f"WHERE EXISTS (SELECT 1 FROM {target} t WHERE {key_match})"
        ),
    )


def _key(row: tuple[Any, ...]) -> Key:
    return row[0] if len(row) == 1 else tuple(row)


class BulkLoader:
    def __init__(
        self,
        importer: Importer,
        columns: Sequence[str],
        *,
        mode: Literal["upsert", "insert"],
        dry_run: bool,
    ) -> None:
        self._sql = _statements(importer, columns)
        self._mode = mode
        self._dry_run = dry_run
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
            copy.write(batch.payload)
        if self._dry_run:
            existing = self._existing(cursor) if self._mode == "insert" else []
            return LoadResult(existing=existing)
        if self._mode == "insert":
            new_keys = {_key(row) for row in cursor.execute(self._sql.insert)}
            result = LoadResult(
                inserted=len(new_keys), existing=[k for k in batch.keys if k not in new_keys]
            )
        else:
            row = cursor.execute(self._sql.upsert).fetchone()
            inserted, changed = (int(row[0]), int(row[1])) if row else (0, 0)
            result = LoadResult(inserted, changed, batch.size - inserted - changed)
        # Only a batch of all-new keys makes the direct way worth trying again.
        self._try_direct = result.inserted == batch.size
        return result

    def _existing(self, cursor: psycopg.Cursor[Any]) -> list[Key]:
        return [_key(row) for row in cursor.execute(self._sql.existing)]
