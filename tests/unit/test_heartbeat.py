"""The heartbeat's decisions, with a database that cannot be reached (a fake sessionmaker
whose every transaction fails the way a dead server does): it keeps trying, raises
``lease_lost`` once a whole lease passed without a renewal, and raises ``time_limit`` at
the soft deadline. Renewals against a real database are covered by the e2e tests."""

from __future__ import annotations

import time
import uuid
from typing import Any, cast

from sqlalchemy import exc as sa_exc

from core import db
from core.errors import LeaseLost, TimeLimitExceeded
from core.lifecycle.heartbeat import Heartbeat, StopReason, StopSignal
from core.lifecycle.leases import Lease


class _DeadDatabase:
    """Stands in for a sessionmaker: every transaction fails to connect."""

    def __init__(self) -> None:
        self.attempts = 0

    def begin(self) -> Any:
        self.attempts += 1
        raise sa_exc.OperationalError("connect", {}, ConnectionRefusedError("refused"))


def _heartbeat(
    database: _DeadDatabase, *, lease: float, limit: float
) -> tuple[Heartbeat, StopSignal]:
    signal = StopSignal()
    heartbeat = Heartbeat(
        cast(db.Sessions, database),
        Lease(job_id=uuid.uuid4(), owner="w", attempt=1),
        lease_seconds=lease,
        time_limit=limit,
        signal=signal,
    )
    return heartbeat, signal


def test_no_renewal_for_a_whole_lease_means_the_lease_is_lost() -> None:
    database = _DeadDatabase()
    heartbeat, signal = _heartbeat(database, lease=0.6, limit=60)
    started = time.monotonic()
    heartbeat.start()
    assert signal.event.wait(5)
    heartbeat.stop()
    assert signal.reason is StopReason.lease_lost
    assert isinstance(signal.error(), LeaseLost)
    assert 0.6 <= time.monotonic() - started < 2
    assert database.attempts >= 2  # it kept trying before giving up


def test_the_soft_deadline_raises_the_time_limit() -> None:
    heartbeat, signal = _heartbeat(_DeadDatabase(), lease=30, limit=0.3)
    started = time.monotonic()
    heartbeat.start()
    assert signal.event.wait(5)
    heartbeat.stop()
    assert signal.reason is StopReason.time_limit
    assert isinstance(signal.error(), TimeLimitExceeded)
    assert 0.3 <= time.monotonic() - started < 1


def test_a_lost_lease_outranks_an_earlier_reason() -> None:
    signal = StopSignal()
    signal.raise_(StopReason.cancel_requested)
    signal.raise_(StopReason.time_limit)
    first = signal.reason
    signal.raise_(StopReason.lease_lost)
    assert (first, signal.reason) == (StopReason.cancel_requested, StopReason.lease_lost)
