"""The outbox side of the ``jobs`` table: a queued job with ``dispatched_at IS NULL`` still
has to be published. The relay takes such rows SKIP LOCKED, publishes, and marks them.

A queued job with a ``waiting_reason`` is held back on purpose (a limit, a paused queue): it
has no message anywhere and is not published until whatever holds it clears the reason."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.lifecycle.clock import in_seconds, now
from core.lifecycle.states import JobStatus
from core.models import Job


def lock_undispatched(session: Session, *, limit: int, min_age: float = 0.0) -> list[Job]:
    """Queued jobs never published; SKIP LOCKED so concurrent relays split the work.

    ``min_age`` leaves alone jobs queued in the last few seconds, which the request that made
    them is still publishing, so the relay does not publish them a second time."""
    query = (
        sa.select(Job)
        .where(
            Job.status == JobStatus.queued.value,
            Job.dispatched_at.is_(None),
            Job.waiting_reason.is_(None),
            Job.updated_at <= in_seconds(-min_age),
        )
        .order_by(Job.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))


def mark_dispatched(session: Session, *, job_ids: list[uuid.UUID]) -> None:
    if job_ids:
        session.execute(
            sa.update(Job)
            .execution_options(synchronize_session=False)
            .where(Job.id.in_(job_ids), Job.dispatched_at.is_(None))
            .values(dispatched_at=now())
        )


# After a publish: one statement for the whole batch, in autocommit, without waiting for
# the disk (synchronous_commit off for this transaction only). A mark lost to a PostgreSQL
# crash just means the relay publishes those jobs once more, which is harmless (only one
# delivery can claim); waiting for a flush here would cost every submit a disk write.
# psycopg's parameter style: the API's async dispatcher runs it as is.
MARK_PUBLISHED_SQL = """
    WITH marked AS (
        UPDATE jobs SET dispatched_at = now()
        WHERE id = ANY(%(job_ids)s) AND dispatched_at IS NULL
        RETURNING 1
    ),
    flush_later AS (SELECT set_config('synchronous_commit', 'off', true) AS setting)
    SELECT count(*) AS marked FROM marked, flush_later
"""


def mark_published(connection: sa.Connection, *, job_ids: list[uuid.UUID]) -> int:
    """``mark_dispatched`` for the dispatcher: one UPDATE, no ORM; how many were marked."""
    if not job_ids:
        return 0
    result = connection.exec_driver_sql(MARK_PUBLISHED_SQL, {"job_ids": job_ids})
    return int(result.scalar_one())


def _published_and_waiting() -> list[sa.ColumnElement[bool]]:
    """Queued jobs whose message was published and should still be on a queue."""
    return [
        Job.status == JobStatus.queued.value,
        Job.dispatched_at.is_not(None),
        Job.waiting_reason.is_(None),
    ]


def lock_stale_dispatched(session: Session, *, older_than: float, limit: int) -> list[Job]:
    """Published jobs nobody claimed for ``older_than`` seconds: candidates for a lost
    message (SKIP LOCKED, like the relay)."""
    query = (
        sa.select(Job)
        .where(*_published_and_waiting(), Job.dispatched_at < in_seconds(-older_than))
        .order_by(Job.dispatched_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))


def published_counts(session: Session) -> dict[str, int]:
    """How many published, unclaimed jobs each kind has: what its queue should hold."""
    rows = session.execute(
        sa.select(Job.kind, sa.func.count()).where(*_published_and_waiting()).group_by(Job.kind)
    )
    return {kind: int(count) for kind, count in rows}


def mark_republished(session: Session, *, job_ids: list[uuid.UUID]) -> None:
    if job_ids:
        session.execute(
            sa.update(Job)
            .execution_options(synchronize_session=False)
            .where(Job.id.in_(job_ids))
            .values(dispatched_at=now())
        )


def undispatch_queued(session: Session) -> int:
    """Put every published-but-unclaimed job back in the outbox: their messages were on a
    Redis that lost its data (restart without persistence, flush). Running jobs keep their
    lease; if their worker is gone too, the reaper handles them. Returns how many."""
    result = session.execute(
        sa.update(Job).where(*_published_and_waiting()).values(dispatched_at=None, updated_at=now())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
