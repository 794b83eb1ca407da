"""Prometheus metrics, read live at scrape time.

A custom collector asks the breaker, Redis (queue depth, through the breaker) and
PostgreSQL (jobs by status, the outbox) for their current values on every scrape: each API
process reports its own breaker (labelled ``process="host:pid"``: with ``conveyor api
--workers N`` each scrape reaches one of N processes, and their series must not be mixed up)
and the (shared) database and queues. A dependency that is
down reports ``*_up 0`` and leaves its other series out; the scrape itself never fails.
Job counts, outcomes, run-time histograms, retries and reaped leases come from
trigger-maintained counters (core.lifecycle.counters, migrations 1000 and 0120), so a scrape
costs the same with a thousand jobs or a hundred million, and what workers did is counted
where any API process can report it (workers serve no metrics endpoint of their own).
Every name exported here is listed in ``METRIC_NAMES``; the Grafana dashboard and the alert
rules under deploy/ may use only those (tests/unit/test_metric_names.py).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import redis
import structlog
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from core import db
from core.broker.breaker import STATES, RedisBreaker
from core.broker.queue_depth import queue_depths
from core.broker.task_names import JOB_ROUTES, QUEUES, route_for
from core.lifecycle import counters
from core.lifecycle.states import JobStatus

log = structlog.get_logger(__name__)


# (name, type) of every series; histograms add _bucket/_sum/_count, counters _total.
METRIC_NAMES: dict[str, str] = {
    "conveyor_redis_breaker_state": "gauge",
    "conveyor_redis_breaker_failure_count": "gauge",
    "conveyor_redis_breaker_successes": "counter",
    "conveyor_redis_breaker_failures": "counter",
    "conveyor_redis_breaker_rejections": "counter",
    "conveyor_redis_breaker_state_changes": "counter",
    "conveyor_redis_up": "gauge",
    "conveyor_queue_depth": "gauge",
    "conveyor_queue_oldest_waiting_seconds": "gauge",
    "conveyor_database_up": "gauge",
    "conveyor_jobs": "gauge",
    "conveyor_jobs_running": "gauge",
    "conveyor_outbox_undispatched": "gauge",
    "conveyor_outbox_oldest_age_seconds": "gauge",
    "conveyor_jobs_finished": "counter",
    "conveyor_jobs_failed": "counter",
    "conveyor_job_run_seconds": "histogram",
    "conveyor_job_retries": "counter",
    "conveyor_leases_reaped": "counter",
    "conveyor_deployment_slots": "gauge",
}


class ConveyorCollector:
    def __init__(
        self,
        sessions: db.Sessions,
        breaker: RedisBreaker,
        redis_client: redis.Redis,
        *,
        deployment_slots: int,
    ) -> None:
        self.sessions = sessions
        self.breaker = breaker
        self.redis = redis_client
        self.deployment_slots = deployment_slots
        self.process = f"{socket.gethostname()}:{os.getpid()}"

    def describe(self) -> list[Metric]:
        """Nothing up front: registering must not touch Redis or PostgreSQL."""
        return []

    def collect(self) -> Iterator[Metric]:
        queues = list(self._queues())  # first, so the breaker series include this read
        yield from self._breaker()
        yield from queues
        yield from self._database()

    def _breaker(self) -> Iterator[Metric]:
        snapshot = self.breaker.snapshot()
        state = GaugeMetricFamily(
            "conveyor_redis_breaker_state",
            "Redis circuit breaker state (1 for the current one).",
            labels=["process", "state"],
        )
        for name in STATES:
            state.add_metric([self.process, name], 1.0 if snapshot["state"] == name else 0.0)
        yield state
        failures = GaugeMetricFamily(
            "conveyor_redis_breaker_failure_count",
            "Consecutive Redis failures counted towards opening the breaker.",
            labels=["process"],
        )
        failures.add_metric([self.process], snapshot["failure_count"])
        yield failures
        for key, help_text in (
            ("successes", "Redis calls that succeeded through the breaker."),
            ("failures", "Redis calls that failed through the breaker."),
            ("rejections", "Redis calls refused by the open breaker without touching Redis."),
            ("state_changes", "Breaker state changes."),
        ):
            counter = CounterMetricFamily(
                f"conveyor_redis_breaker_{key}", help_text, labels=["process"]
            )
            counter.add_metric([self.process], snapshot[key])
            yield counter

    def _queues(self) -> Iterator[Metric]:
        depths = queue_depths(self.redis, self.breaker)
        known = {queue: depth for queue, depth in depths.items() if depth is not None}
        yield GaugeMetricFamily(
            "conveyor_redis_up",
            "Whether the last read of the queues from Redis succeeded.",
            value=1.0 if known else 0.0,
        )
        gauge = GaugeMetricFamily(
            "conveyor_queue_depth",
            "Messages waiting in a Celery queue on Redis (not yet taken by a worker).",
            labels=["queue"],
        )
        for queue, depth in known.items():
            gauge.add_metric([queue], depth)
        yield gauge

    def _database(self) -> Iterator[Metric]:
        try:
            with db.transaction(self.sessions) as session:
                counters.fold(session)
                named = counters.read_all(session)
                oldest = counters.oldest_undispatched_age(session)
                running = counters.running_by_kind(session)
                waiting = counters.oldest_waiting_age(session, list(JOB_ROUTES))
        except Exception as error:  # DatabaseUnavailable mostly; a scrape must not fail
            log.warning("metrics.database_unavailable", error=type(error).__name__)
            yield GaugeMetricFamily("conveyor_database_up", "PostgreSQL answered.", value=0.0)
            return
        yield GaugeMetricFamily("conveyor_database_up", "PostgreSQL answered.", value=1.0)
        jobs = GaugeMetricFamily("conveyor_jobs", "Jobs by status.", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], named.get(status.value, 0))
        yield jobs
        yield from _running(running, self.deployment_slots)
        yield from _waiting(waiting)
        yield from _outcomes(named)
        undispatched = named.get(counters.UNDISPATCHED, 0)
        yield GaugeMetricFamily(
            "conveyor_outbox_undispatched",
            "Jobs committed but not yet published to Redis.",
            value=undispatched,
        )
        yield GaugeMetricFamily(
            "conveyor_outbox_oldest_age_seconds",
            "Age of the oldest job waiting to be published (0 when none).",
            value=oldest or 0.0,
        )


def _running(running: dict[str, int], slots: int) -> Iterator[Metric]:
    gauge = GaugeMetricFamily("conveyor_jobs_running", "Running jobs by kind.", labels=["kind"])
    for kind in JOB_ROUTES:
        gauge.add_metric([kind], running.get(kind, 0))
    yield gauge
    deployments = GaugeMetricFamily(
        "conveyor_deployment_slots",
        "Deployment slots: in use, and the global cap (CONVEYOR_DEPLOY_MAX_RUNNING).",
        labels=["state"],
    )
    deployments.add_metric(["used"], running.get("deployment", 0))
    deployments.add_metric(["limit"], slots)
    yield deployments


def _waiting(ages: dict[str, float]) -> Iterator[Metric]:
    by_queue: dict[str, float] = dict.fromkeys(QUEUES, 0.0)
    for kind, age in ages.items():
        queue = route_for(kind).queue
        by_queue[queue] = max(by_queue[queue], age)
    gauge = GaugeMetricFamily(
        "conveyor_queue_oldest_waiting_seconds",
        "Age of the oldest queued job of a queue, held back or not (0 when none).",
        labels=["queue"],
    )
    for queue, age in by_queue.items():
        gauge.add_metric([queue], age)
    yield gauge


def _series(named: dict[str, int], prefix: str) -> dict[tuple[str, ...], int]:
    """``prefix:a:b`` counters as {(a, b): value}."""
    return {
        tuple(name.split(":")[1:]): value
        for name, value in named.items()
        if name.startswith(prefix + ":")
    }


def _outcomes(named: dict[str, int]) -> Iterator[Metric]:
    families = (
        ("finished", "conveyor_jobs_finished", "Jobs that ended, by outcome.", ["kind", "status"]),
        ("failed", "conveyor_jobs_failed", "Failed jobs by error code.", ["kind", "code"]),
        ("retries", "conveyor_job_retries", "Attempts after the first (crash or retry).", ["kind"]),
        ("reaped", "conveyor_leases_reaped", "Jobs put back after their lease expired.", ["kind"]),
    )
    for prefix, name, help_text, labels in families:
        family = CounterMetricFamily(name, help_text, labels=labels)
        for key, value in sorted(_series(named, prefix).items()):
            if len(key) == len(labels):
                family.add_metric(list(key), value)
        yield family
    yield from _run_times(named)


def _run_times(named: dict[str, int]) -> Iterator[Metric]:
    histogram = HistogramMetricFamily(
        "conveyor_job_run_seconds",
        "From first start to the end, of jobs that ran, by kind.",
        labels=["kind"],
    )
    per_bucket = _series(named, "runtime")
    sums = _series(named, "runtime_ms")
    for kind in sorted({key[0] for key in per_bucket}):
        cumulative, buckets = 0, []
        for bound in (*counters.RUN_TIME_BUCKETS, "+Inf"):
            cumulative += per_bucket.get((kind, bound), 0)
            buckets.append((bound, float(cumulative)))
        histogram.add_metric([kind], buckets, sum_value=sums.get((kind,), 0) / 1000)
    yield histogram


def build_registry(
    sessions: db.Sessions,
    breaker: RedisBreaker,
    redis_client: redis.Redis,
    *,
    deployment_slots: int,
) -> CollectorRegistry:
    """A registry of this process's own (not the global one: several apps may live in one
    test process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        ConveyorCollector(sessions, breaker, redis_client, deployment_slots=deployment_slots)
    )
    ProcessCollector(registry=registry)
    return registry
