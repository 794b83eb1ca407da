"""The job event log (``job_events``): append-only, ordered by id, read back by keyset."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.models import JobEvent


def add_event(session: Session, job_id: uuid.UUID, type_: str, attempt: int, **data: Any) -> None:
    session.add(JobEvent(job_id=job_id, type=type_, attempt=attempt, data=data))


def list_events(
    session: Session, *, job_id: uuid.UUID, after_id: int = 0, limit: int = 200
) -> list[JobEvent]:
    query = (
        sa.select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.id > after_id)
        .order_by(JobEvent.id)
        .limit(limit)
    )
    return list(session.scalars(query))
