"""A job's log (``job_logs``): output lines and events, in order, durable, read back by id.

Writers append with ``append``: fenced by the lease (a zombie attempt's lines are dropped and
it learns it lost the job) and followed by a ``NOTIFY`` on ``CHANNEL``, delivered at commit,
so live readers (the API's SSE streams) wake up at once instead of polling. Readers page by
id (``list_logs(after=...)``), which is also the SSE event id clients resume from.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.errors import LeaseLost
from core.models import JobLog

CHANNEL = "conveyor_job_logs"
MAX_LINE_CHARS = 64 * 1024

_APPEND = sa.text(
    """
    INSERT INTO job_logs (job_id, attempt, event, host, task, line, data)
    SELECT j.id, j.attempt, v.event, v.host, v.task, v.line, COALESCE(v.data, '{}'::jsonb)
    FROM jobs AS j,
         jsonb_to_recordset(CAST(:rows AS jsonb))
             AS v(event text, host text, task text, line text, data jsonb)
    WHERE j.id = :job_id AND j.status = 'running'
      AND j.lease_owner = :owner AND j.attempt = :attempt
    """
)


@dataclass(frozen=True)
class LogLine:
    event: str
    line: str = ""
    host: str | None = None
    task: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        line = self.line if len(self.line) <= MAX_LINE_CHARS else self.line[:MAX_LINE_CHARS] + "…"
        return {
            "event": self.event,
            "host": self.host,
            "task": self.task,
            "line": line,
            "data": self.data,
        }


def append(
    session: Session, *, job_id: uuid.UUID, owner: str, attempt: int, lines: list[LogLine]
) -> None:
    """Append ``lines`` in order for the attempt that owns the job; LeaseLost otherwise."""
    if not lines:
        return
    result = session.execute(
        _APPEND,
        {
            "rows": json.dumps([line.as_row() for line in lines]),
            "job_id": job_id,
            "owner": owner,
            "attempt": attempt,
        },
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise LeaseLost()
    session.execute(sa.select(sa.func.pg_notify(CHANNEL, str(job_id))))


def list_logs(
    session: Session, *, job_id: uuid.UUID, after: int = 0, limit: int = 500
) -> list[JobLog]:
    return list(
        session.scalars(
            sa.select(JobLog)
            .where(JobLog.job_id == job_id, JobLog.id > after)
            .order_by(JobLog.id)
            .limit(limit)
        )
    )
