"""Redis high availability with Sentinel, on real processes: a master, a replica and three
Sentinels (redis-server), the real API and two prefork workers finding the master through
the Sentinels. The master is SIGKILLed while clients submit 2,000 jobs: the API never
answers 5xx, every job succeeds exactly once, and dispatch resumes on the promoted replica
without restarting anything."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from core import db
from core.api_keys import Role
from core.models import Job
from core.settings import Settings
from tests import services
from tests.e2e.test_faults import assert_each_ran_once, jobs_by_status
from tests.sentinel import MASTER_NAME, SentinelSet
from tests.submit_load import Submitted, submit_steadily

pytestmark = [pytest.mark.e2e, pytest.mark.slow(90)]

JOBS = 2_000
RATE = 100.0  # submits per second, in all


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    (tmp_path / "sentinel").mkdir()
    running = SentinelSet(tmp_path / "sentinel").start()
    yield running
    running.stop()


def _through_sentinel(sentinels: SentinelSet) -> dict[str, str]:
    # redis_url's host is never used with Sentinel: only its database number (and the
    # master's credentials, none here).
    return {
        "CONVEYOR_REDIS_SENTINELS": sentinels.addresses,
        "CONVEYOR_REDIS_MASTER_NAME": MASTER_NAME,
        "CONVEYOR_REDIS_URL": "redis://ignored-with-sentinel/0",
    }


def _first_dispatch_after(sessions: db.Sessions, moment: float) -> float | None:
    with db.transaction(sessions) as session:
        first = session.scalar(
            sa.select(sa.func.min(sa.extract("epoch", Job.dispatched_at))).where(
                Job.dispatched_at > sa.func.to_timestamp(moment)
            )
        )
    return float(first) if first is not None else None


def test_a_master_killed_mid_load_loses_and_doubles_nothing(
    platform: services.Platform,
    settings: Settings,
    sessions: db.Sessions,
    sentinels: SentinelSet,
    api_client: Any,
) -> None:
    env = _through_sentinel(sentinels)
    platform.start_api(env)
    workers = [platform.start_worker(concurrency=2, extra_env=env) for _ in range(2)]
    _, flower_url = platform.start_flower(env)
    client = api_client(Role.submitter)
    assert client.get("/health/redis").json()["status"] == "up"

    results: list[Submitted] = []
    load = threading.Thread(
        target=lambda: results.extend(submit_steadily(client, count=JOBS, rate=RATE, clients=8))
    )
    load.start()
    time.sleep(JOBS / RATE / 4)  # a quarter of the load in
    killed = time.time()
    sentinels.kill_master()
    services.wait_until(
        lambda: sentinels.current_master_port() == sentinels.replica.port,
        timeout=30,
        interval=0.1,
        message="the replica promoted",
    )
    promoted = time.time() - killed
    load.join(300)

    assert len(results) == JOBS
    assert {r.status for r in results} == {202}, "the API answered something else than 202"
    job_ids = [r.job_id for r in results if r.job_id is not None]
    services.wait_until(
        lambda: jobs_by_status(sessions, job_ids).get("succeeded") == JOBS,
        timeout=180,
        interval=0.5,
        message=f"{JOBS} jobs to succeed",
    )
    assert_each_ran_once(sessions, job_ids)
    assert all(worker.popen.poll() is None for worker in workers)  # never restarted
    # A publish that was under way at the kill may be marked just after it: look a bit later.
    resumed = _first_dispatch_after(sessions, killed + 0.2)
    assert resumed is not None
    # The promoted replica carried the old master's epoch marker: the relays noticed the new
    # master and published again what the old one may have lost.
    new_epochs = [
        line
        for process in platform.processes
        for line in process.output().splitlines()
        if '"broker.new_epoch"' in line and '"previous": null' not in line
    ]
    assert new_epochs, "no relay noticed the failover"
    # Flower follows the master too: it still sees both workers through the new master.
    auth = (settings.flower_user, settings.flower_password.get_secret_value())
    seen = httpx.get(f"{flower_url}/api/workers?refresh=1", auth=auth, timeout=30).json()
    assert len(seen) == 2, seen
    print(
        f"\nsentinel failover: replica promoted {promoted:.1f} s after the kill; "
        f"dispatch resumed {resumed - killed:.1f} s after the kill; "
        f"{JOBS} jobs, 0 lost, 0 run twice"
    )
