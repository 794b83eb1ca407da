"""How many jobs are in each status, and how many wait in the outbox, at a cost that does
not grow with the number of jobs.

Triggers on ``jobs`` (migration 1000_job_counters) append a delta row for every change of
status or of "waiting to be published" (one per statement for inserts and deletes, one per
changed row for updates). Reading sums the folded counters and the pending deltas; folding
moves the deltas into the counters under an advisory lock, so it costs what changed since
the last fold. Scrapes fold, and so does every API process's relay loop, so deltas never
pile up when nobody scrapes.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.lifecycle.states import JobStatus
from core.models import Job

UNDISPATCHED = "undispatched"
# Upper bounds (seconds) of the run-time histogram, as the trigger of migration 0120 buckets
# them (a frozen copy there; tests/integration/test_job_counters.py checks they agree).
RUN_TIME_BUCKETS = ("0.1", "0.5", "1", "5", "15", "60", "300", "900", "3600", "14400")
FOLD_LOCK_ID = 0x636E7472  # "cntr"

_FOLD = sa.text(
    """
    WITH moved AS (DELETE FROM job_counter_deltas RETURNING name, delta),
    summed AS (SELECT name, sum(delta) AS delta FROM moved GROUP BY name)
    INSERT INTO job_counters (name, value)
    SELECT name, delta FROM summed ORDER BY name
    ON CONFLICT (name) DO UPDATE SET value = job_counters.value + EXCLUDED.value
    """
)
_READ = sa.text(
    """
    SELECT name, sum(value)::bigint FROM (
        SELECT name, value FROM job_counters
        UNION ALL SELECT name, delta FROM job_counter_deltas
    ) AS counted GROUP BY name
    """
)


def fold(session: Session) -> bool:
    """Fold pending deltas into the counters; False when another fold holds the lock."""
    locked = session.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(FOLD_LOCK_ID)))
    if not locked:
        return False
    session.execute(_FOLD)
    return True


def read_all(session: Session) -> dict[str, int]:
    """Every counter by name: statuses, ``undispatched``, and the series of migration
    0120_job_metrics (``finished:<kind>:<status>``, ``runtime:<kind>:<le>``, ...)."""
    return {name: int(value or 0) for name, value in session.execute(_READ)}


def read(session: Session) -> tuple[dict[str, int], int]:
    """(jobs by status, every status present; jobs waiting to be published)."""
    rows = read_all(session)
    counts = {status.value: rows.get(status.value, 0) for status in JobStatus}
    return counts, rows.get(UNDISPATCHED, 0)


def running_by_kind(session: Session) -> dict[str, int]:
    """Running jobs per kind: bounded by the worker slots, read from the partial index of
    running leases (not a count of the table)."""
    rows = session.execute(
        sa.select(Job.kind, sa.func.count())
        .where(Job.status == JobStatus.running.value)
        .group_by(Job.kind)
    )
    return {kind: int(count) for kind, count in rows}


def oldest_waiting_age(session: Session, kinds: list[str]) -> dict[str, float]:
    """Seconds the oldest queued job of each kind has waited (kinds with none left out):
    the first entry per kind of ``ix_jobs_queued_kind``."""
    ages: dict[str, float] = {}
    for kind in kinds:
        oldest = (
            sa.select(Job.created_at)
            .where(Job.status == JobStatus.queued.value, Job.kind == kind)
            .order_by(Job.created_at)
            .limit(1)
            .scalar_subquery()
        )
        age = session.scalar(sa.select(sa.func.extract("epoch", sa.func.now() - oldest)))
        if age is not None:
            ages[kind] = float(age)
    return ages


def oldest_undispatched_age(session: Session) -> float | None:
    """Seconds the oldest job has waited to be published (the partial index's first entry)."""
    oldest = (
        sa.select(Job.created_at)
        .where(Job.status == JobStatus.queued.value, Job.dispatched_at.is_(None))
        .order_by(Job.created_at)
        .limit(1)
        .scalar_subquery()
    )
    age = session.scalar(sa.select(sa.func.extract("epoch", sa.func.now() - oldest)))
    return float(age) if age is not None else None
