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


def read(session: Session) -> tuple[dict[str, int], int]:
    """(jobs by status, every status present; jobs waiting to be published)."""
    rows: dict[str, int | None] = {name: value for name, value in session.execute(_READ)}
    counts = {status.value: int(rows.get(status.value) or 0) for status in JobStatus}
    return counts, int(rows.get(UNDISPATCHED) or 0)


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
