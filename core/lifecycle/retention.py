"""Retention: finished jobs older than ``job_retention_days`` are deleted, with their events,
logs, rejected rows and deployment targets (foreign keys ON DELETE CASCADE; a schedule
firing keeps its row, its job_id becomes NULL).

In batches of ``retention_batch_rows`` by primary key, each its own short transaction, so
the API never waits on a long delete: a batch locks only its own rows, and a submit or a
claim never touches a finished job. Batches take the oldest finished jobs through the
partial index ``ix_jobs_finished``. One process purges at a time (a transaction-level
advisory lock per batch); others skip. A pass stops after ``time_budget`` seconds and asks
to run again soon, so the recovery loop that runs it keeps relaying in between.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
import structlog

from core import db
from core.lifecycle.clock import in_seconds
from core.lifecycle.states import TERMINAL
from core.models import Job

log = structlog.get_logger(__name__)

# pg_try_advisory_xact_lock key of the purge ("retn").
PURGE_LOCK_ID = 0x7265746E
DAY = 86_400.0


@dataclass(frozen=True)
class Purged:
    jobs: int
    more: bool  # stopped at the time budget with old jobs left


def purge_batch(sessions: db.Sessions, *, older_than_seconds: float, batch_rows: int) -> int | None:
    """Delete one batch; None when another process holds the purge."""
    with db.transaction(sessions) as session:
        if not session.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(PURGE_LOCK_ID))):
            return None
        batch = (
            sa.select(Job.id)
            .where(
                Job.status.in_([status.value for status in TERMINAL]),
                Job.finished_at < in_seconds(-older_than_seconds),
            )
            .order_by(Job.finished_at)
            .limit(batch_rows)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        result = session.execute(
            sa.delete(Job).execution_options(synchronize_session=False).where(Job.id.in_(batch))
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def purge_finished(
    sessions: db.Sessions,
    *,
    retention_days: float,
    batch_rows: int,
    time_budget: float = 5.0,
    pause: float = 0.05,
) -> Purged:
    """Delete finished jobs older than ``retention_days``, batch by batch, for at most
    ``time_budget`` seconds (a short ``pause`` between batches leaves the database to
    others)."""
    started = time.monotonic()
    total = 0
    while True:
        deleted = purge_batch(
            sessions, older_than_seconds=retention_days * DAY, batch_rows=batch_rows
        )
        if deleted is None:
            return Purged(total, more=False)
        total += deleted
        if deleted < batch_rows:
            more = False
            break
        if time.monotonic() - started >= time_budget:
            more = True
            break
        time.sleep(pause)
    if total:
        log.info("retention.purged", jobs=total, more=more)
    return Purged(total, more=more)
