"""The database enforces the state machine written in core.lifecycle.states: every pair in
ALLOWED_TRANSITIONS is accepted, every other change of status is refused."""

from __future__ import annotations

import itertools
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from core import db
from core.lifecycle.states import ALLOWED_TRANSITIONS, JobStatus
from core.models import Job


def _job_in(session: sa.orm.Session, status: JobStatus) -> uuid.UUID:
    job_id = uuid.uuid4()
    session.execute(
        sa.insert(Job).values(
            id=job_id, kind="noop", params={}, request_fingerprint="x", status=status.value
        )
    )
    return job_id


@pytest.mark.parametrize(
    ("source", "target"),
    [pair for pair in itertools.product(JobStatus, JobStatus) if pair[0] is not pair[1]],
)
def test_status_changes_follow_the_state_machine(
    sessions: db.Sessions, source: JobStatus, target: JobStatus
) -> None:
    allowed = target in ALLOWED_TRANSITIONS[source]
    with db.transaction(sessions) as session:
        job_id = _job_in(session, source)
    change = sa.update(Job).where(Job.id == job_id).values(status=target.value)
    if allowed:
        with db.transaction(sessions) as session:
            session.execute(change)
    else:
        refused = pytest.raises(sa_exc.IntegrityError, match="cannot go from")
        with refused, db.transaction(sessions) as session:
            session.execute(change)
    with db.transaction(sessions) as session:
        status = session.scalar(sa.select(Job.status).where(Job.id == job_id))
    assert status == (target if allowed else source).value
