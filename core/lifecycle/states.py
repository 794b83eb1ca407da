"""The job state machine, written down once. Pure: no I/O.

PostgreSQL enforces ``ALLOWED_TRANSITIONS``: a trigger on ``jobs`` refuses any other change
of ``status`` (migration 0003; tests/integration/test_job_states.py checks that the
database allows exactly these pairs). The commands in ``core.lifecycle.commands`` pick the
transitions; the database makes sure no code path invents another.
"""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


ACTIVE: frozenset[JobStatus] = frozenset({JobStatus.queued, JobStatus.running})
TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}
)
RETRYABLE: frozenset[JobStatus] = frozenset({JobStatus.failed, JobStatus.cancelled})

ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    # queued -> failed: a delivery that finds the job out of attempts
    JobStatus.queued: frozenset({JobStatus.running, JobStatus.cancelled, JobStatus.failed}),
    # running -> queued: the reaper putting back a job whose lease expired
    JobStatus.running: frozenset({JobStatus.queued, *TERMINAL}),
    JobStatus.succeeded: frozenset(),
    JobStatus.failed: frozenset({JobStatus.queued}),
    JobStatus.cancelled: frozenset({JobStatus.queued}),
}


def transition_pairs() -> list[tuple[str, str]]:
    """Every allowed (from, to) pair, sorted: what the database trigger allows."""
    return sorted(
        (source.value, target.value)
        for source, targets in ALLOWED_TRANSITIONS.items()
        for target in targets
    )
