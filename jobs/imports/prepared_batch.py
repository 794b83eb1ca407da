"""A batch as it travels from the reader process to the unit that commits it: slim on
purpose (pickling 10,000 rows of fields would cost more than reading them), so it carries
the COPY payload, the counts and the row errors; plus, in ``insert`` mode or for importers
with unique fields, what is needed to reject rows the database refuses (key taken, unique
value taken)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.imports.row_errors import RowError
from jobs.imports.batch_plan import Key, LoadPlan
from jobs.imports.csv_source import RawBatch
from jobs.imports.row_validation import CheckedBatch

_ESCAPED = re.compile(r"\\[\\tnr]")
_UNESCAPE = {"\\\\": "\\", "\\t": "\t", "\\n": "\n", "\\r": "\r"}


@dataclass(frozen=True)
class PreparedBatch:
    payload: bytes  # COPY text format, one line per row to load
    size: int  # rows in the payload
    superseded: int  # upsert: rows overwritten by a later row of the same key in the batch
    errors: list[RowError]
    rejected: int  # rows rejected before reaching the database
    records: int  # data rows read
    end_offset: int  # where the next record starts
    next_row: int  # its row number
    exhausted: bool
    # insert mode only: each payload row's key and row number, and its fields when the
    # model changed them (otherwise they are recovered from the payload line)
    keys: list[Key] = field(default_factory=list)
    row_numbers: list[int] = field(default_factory=list)
    originals: dict[int, list[str]] = field(default_factory=dict)

    @classmethod
    def of(
        cls, raw: RawBatch, checked: CheckedBatch, plan: LoadPlan, *, keep_keys: bool
    ) -> PreparedBatch:
        return cls(
            payload=plan.payload,
            size=len(plan.rows),
            superseded=plan.superseded,
            errors=[*raw.rejected, *checked.errors, *plan.duplicates],
            # shape errors are one per row; validation counted its rows; duplicates one each
            rejected=len(raw.rejected) + checked.rejected + len(plan.duplicates),
            records=raw.records - checked.blank,
            end_offset=raw.end_offset,
            next_row=raw.last_row + 1,
            exhausted=raw.exhausted,
            keys=plan.keys if keep_keys else [],
            row_numbers=list(plan.row_numbers) if keep_keys else [],
            originals=plan.originals if keep_keys else {},
        )

    def fields_of(self, indexes: list[int]) -> dict[int, list[str]]:
        """The fields as read of some payload rows (for error reports)."""
        lines = self.payload.decode().split("\n") if indexes else []
        return {
            index: self.originals.get(index)
            or [_unescape(cell) for cell in lines[index].split("\t")]
            for index in indexes
        }


def _unescape(cell: str) -> str:
    if cell == "\\N":  # COPY's NULL marker: the cell was empty
        return ""
    return _ESCAPED.sub(lambda match: _UNESCAPE[match.group()], cell)
