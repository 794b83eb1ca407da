"""The operator metrics, scraped from a registry on real PostgreSQL after real lifecycle
transitions: outcomes, failure codes, retries, reaped leases, the run-time histogram,
running jobs and deployment slots, and each queue's oldest waiting job. Every series
listed in core.metrics.METRIC_NAMES is exported, and nothing else."""

from __future__ import annotations

import importlib.util
import time
import uuid
from pathlib import Path

import redis
import sqlalchemy as sa
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from core import db, metrics
from core.broker.breaker import RedisBreaker
from core.lifecycle import counters, leases, reaper
from core.lifecycle.states import JobStatus
from core.models import Job
from core.settings import Settings
from tests.integration.test_job_store import claim, new_job

MIGRATION = Path(__file__).resolve().parents[2] / "migrations/versions/20261126_0120_job_metrics.py"


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def exposition(sessions: db.Sessions, settings: Settings) -> str:
    client = redis.Redis.from_url(settings.redis_url)
    registry = metrics.build_registry(
        sessions, RedisBreaker.from_settings(settings), client, deployment_slots=2
    )
    try:
        return generate_latest(registry).decode()
    finally:
        client.close()


def scrape(sessions: db.Sessions, settings: Settings) -> Samples:
    samples = {}
    for family in text_string_to_metric_families(exposition(sessions, settings)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def finish(sessions: db.Sessions, lease: leases.Lease, status: JobStatus, code: str = "") -> None:
    with db.transaction(sessions) as session:
        leases.finish_job(session, lease=lease, status=status, error_code=code or None)


def backdate_start(sessions: db.Sessions, job_id: uuid.UUID, seconds: float) -> None:
    with db.transaction(sessions) as session:
        session.execute(
            sa.update(Job)
            .where(Job.id == job_id)
            .values(started_at=sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds))
        )


def test_outcomes_retries_reaps_and_run_times(sessions: db.Sessions, settings: Settings) -> None:
    quick, slow, broken, crashing, waiting = (new_job(sessions) for _ in range(5))
    lease = claim(sessions, quick, "w")
    assert lease is not None
    finish(sessions, lease, JobStatus.succeeded)

    lease = claim(sessions, slow, "w")
    assert lease is not None
    backdate_start(sessions, slow, 42)
    finish(sessions, lease, JobStatus.succeeded)

    lease = claim(sessions, broken, "w")
    assert lease is not None
    finish(sessions, lease, JobStatus.failed, "induced_failure")

    assert claim(sessions, crashing, "dead", lease_seconds=0.3) is not None
    time.sleep(0.6)
    with db.transaction(sessions) as session:
        assert reaper.requeue_expired(session, limit=10).requeued == [str(crashing)]
    again = claim(sessions, crashing, "w2")  # the second attempt: a retry
    assert again is not None

    samples = scrape(sessions, settings)
    assert value(samples, "conveyor_jobs_finished_total", kind="sleep", status="succeeded") == 2
    assert value(samples, "conveyor_jobs_finished_total", kind="sleep", status="failed") == 1
    assert value(samples, "conveyor_jobs_failed_total", kind="sleep", code="induced_failure") == 1
    assert value(samples, "conveyor_leases_reaped_total", kind="sleep") == 1
    assert value(samples, "conveyor_job_retries_total", kind="sleep") == 1
    assert value(samples, "conveyor_job_run_seconds_count", kind="sleep") == 3
    assert value(samples, "conveyor_job_run_seconds_bucket", kind="sleep", le="1") == 2
    assert value(samples, "conveyor_job_run_seconds_bucket", kind="sleep", le="15") == 2
    assert value(samples, "conveyor_job_run_seconds_bucket", kind="sleep", le="60") == 3
    assert 42 <= value(samples, "conveyor_job_run_seconds_sum", kind="sleep") < 45
    assert value(samples, "conveyor_jobs_running", kind="sleep") == 1
    assert value(samples, "conveyor_jobs", status="queued") == 1  # ``waiting``
    assert value(samples, "conveyor_queue_oldest_waiting_seconds", queue="default") > 0
    assert value(samples, "conveyor_queue_oldest_waiting_seconds", queue="imports") == 0
    assert value(samples, "conveyor_deployment_slots", state="limit") == 2
    assert value(samples, "conveyor_deployment_slots", state="used") == 0
    assert waiting  # still queued


def test_every_listed_series_is_exported_and_nothing_else(
    sessions: db.Sessions, settings: Settings
) -> None:
    lease = claim(sessions, new_job(sessions), "w")
    assert lease is not None
    finish(sessions, lease, JobStatus.failed, "x")
    families = {
        family.name: family.type
        for family in text_string_to_metric_families(exposition(sessions, settings))
        if family.name.startswith("conveyor_")
    }
    assert families == metrics.METRIC_NAMES


def test_the_histogram_buckets_match_the_migrations_trigger() -> None:
    spec = importlib.util.spec_from_file_location("migration_0120", MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.BUCKETS == counters.RUN_TIME_BUCKETS
