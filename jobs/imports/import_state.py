"""An import's position and counters: what the checkpoint stores and the result reports.

Counts (all in rows, blank lines excluded):
  rows_total = valid + rejected
  valid      = rows that passed validation (in a dry run: would have been loaded)
  inserted   = rows whose key was new
  updated    = rows whose key already existed, in the table or earlier in the file, whether
               or not their values changed, so re-importing a file counts every row here
  unchanged  = of ``updated``, rows identical to the stored row (not rewritten)
  rejected   = rows not loaded, each with at least one entry in the errors list
A dry run writes nothing, so it reports inserted = updated = unchanged = 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from core.imports.options import ImportParams
from jobs.imports.bulk_load import LoadResult
from jobs.imports.csv_source import Header
from jobs.imports.prepared_batch import PreparedBatch
from jobs.job_context import Progress

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class ImportState:
    header: list[str]
    header_row: int
    delimiter: str
    encoding: str
    estimate: int  # rows expected, from the line count (quoted newlines over-count)
    offset: int  # byte offset of the next record
    next_row: int  # its row number
    rows: int = 0
    valid: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    finished: bool = False
    version: int = CHECKPOINT_VERSION

    @classmethod
    def starting(cls, header: Header, *, encoding: str, estimate: int) -> ImportState:
        return cls(
            header=header.fields,
            header_row=header.row,
            delimiter=header.delimiter,
            encoding=encoding,
            estimate=estimate,
            offset=header.end_offset,
            next_row=header.row + 1,
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any] | None) -> ImportState | None:
        if not checkpoint or checkpoint.get("version") != CHECKPOINT_VERSION:
            return None  # nothing committed yet (or an unknown layout): start over
        return cls(**checkpoint)

    def advanced(
        self, batch: PreparedBatch, loaded: LoadResult, *, existing: int, dry_run: bool
    ) -> ImportState:
        rejected = batch.rejected + existing
        updated = 0 if dry_run else loaded.changed + loaded.unchanged + batch.superseded
        return replace(
            self,
            offset=batch.end_offset,
            next_row=batch.next_row,
            rows=self.rows + batch.records,
            valid=self.valid + batch.records - rejected,
            inserted=self.inserted + loaded.inserted,
            updated=self.updated + updated,
            unchanged=self.unchanged + loaded.unchanged,
            rejected=self.rejected + rejected,
            finished=batch.exhausted,
        )

    def progress(self) -> Progress:
        total = self.rows if self.finished else max(self.estimate, self.rows)
        return Progress(done=self.rows, total=total, failed=self.rejected, checkpoint=asdict(self))

    def result(self, params: ImportParams) -> dict[str, Any]:
        return {
            "importer": params.importer,
            "dry_run": params.dry_run,
            "mode": params.mode,
            "rows_total": self.rows,
            "valid": self.valid,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "columns": self.header,
            "delimiter": self.delimiter,
            "encoding": self.encoding,
        }
