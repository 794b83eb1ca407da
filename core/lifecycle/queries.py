"""Reading jobs: one job (visibility-checked), pages of jobs, counts. No writes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core import page_cursor
from core.api_keys import Principal
from core.errors import NotFound
from core.lifecycle.states import JobStatus
from core.models import Job


def get_job(session: Session, *, job_id: uuid.UUID, principal: Principal | None = None) -> Job:
    """A job visible to ``principal`` (None = the platform itself), or NotFound."""
    query = sa.select(Job).where(Job.id == job_id)
    if principal is not None and not principal.sees_all_jobs:
        query = query.where(Job.principal_id == principal.id)
    job = session.scalar(query)
    if job is None:
        raise NotFound(f"Job {job_id} not found.", where={"path": "job_id"})
    return job


class Keyed(Protocol):
    """What a page cursor is made of (an ORM Job, or the API's JobRecord)."""

    @property
    def created_at(self) -> datetime: ...
    @property
    def id(self) -> uuid.UUID: ...


def encode_cursor(job: Keyed) -> str:
    return page_cursor.encode(job.created_at.isoformat(), job.id)


def _sort_key(parts: list[str]) -> tuple[datetime, uuid.UUID]:
    created, job_id = parts  # anything but two parts is a ValueError
    return datetime.fromisoformat(created), uuid.UUID(job_id)


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    return page_cursor.decode(cursor, _sort_key)


def list_jobs(
    session: Session,
    *,
    principal: Principal | None,
    status: JobStatus | None = None,
    kind: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    """Newest first, keyset-paginated on (created_at, id)."""
    query = sa.select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    if principal is not None and not principal.sees_all_jobs:
        query = query.where(Job.principal_id == principal.id)
    if status is not None:
        query = query.where(Job.status == status.value)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if cursor is not None:
        created, job_id = decode_cursor(cursor)
        query = query.where(sa.tuple_(Job.created_at, Job.id) < sa.tuple_(created, job_id))
    jobs = list(session.scalars(query))
    next_cursor = encode_cursor(jobs[limit - 1]) if len(jobs) > limit else None
    return jobs[:limit], next_cursor


def job_counts(session: Session) -> dict[str, int]:
    """How many jobs are in each status (every status present, zero or not)."""
    rows = session.execute(sa.select(Job.status, sa.func.count()).group_by(Job.status))
    counts = dict.fromkeys((status.value for status in JobStatus), 0)
    counts.update({status: int(count) for status, count in rows})
    return counts


def outbox_stats(session: Session) -> tuple[int, float | None]:
    """How many jobs wait to be published, and the age in seconds of the oldest."""
    row = session.execute(
        sa.select(
            sa.func.count(),
            sa.func.extract("epoch", sa.func.now() - sa.func.min(Job.created_at)),
        ).where(Job.status == JobStatus.queued.value, Job.dispatched_at.is_(None))
    ).one()
    return int(row[0]), (float(row[1]) if row[1] is not None else None)
