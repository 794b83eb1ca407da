"""Prometheus metrics, read live at scrape time.

A custom collector asks the breaker, Redis (queue depth, through the breaker) and
PostgreSQL (jobs by status, the outbox) for their current values on every scrape: each API
process reports its own breaker and the (shared) database and queues. A dependency that is
down reports ``*_up 0`` and leaves its other series out; the scrape itself never fails.
Job counts come from trigger-maintained counters (core.job_counters), so a scrape costs the
same with a thousand jobs or a hundred million.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
import structlog
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from core import db, job_counters
from core.broker.breaker import STATES, RedisBreaker
from core.broker.queue_depth import queue_depths

log = structlog.get_logger(__name__)


class ConveyorCollector:
    def __init__(
        self, sessions: db.Sessions, breaker: RedisBreaker, redis_client: redis.Redis
    ) -> None:
        self.sessions = sessions
        self.breaker = breaker
        self.redis = redis_client

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
            labels=["state"],
        )
        for name in STATES:
            state.add_metric([name], 1.0 if snapshot["state"] == name else 0.0)
        yield state
        yield GaugeMetricFamily(
            "conveyor_redis_breaker_failure_count",
            "Consecutive Redis failures counted towards opening the breaker.",
            value=snapshot["failure_count"],
        )
        for key, help_text in (
            ("successes", "Redis calls that succeeded through the breaker."),
            ("failures", "Redis calls that failed through the breaker."),
            ("rejections", "Redis calls refused by the open breaker without touching Redis."),
            ("state_changes", "Breaker state changes."),
        ):
            yield CounterMetricFamily(
                f"conveyor_redis_breaker_{key}", help_text, value=snapshot[key]
            )

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
                job_counters.fold(session)
                counts, undispatched = job_counters.read(session)
                oldest = job_counters.oldest_undispatched_age(session)
        except Exception as error:  # DatabaseUnavailable mostly; a scrape must not fail
            log.warning("metrics.database_unavailable", error=type(error).__name__)
            yield GaugeMetricFamily("conveyor_database_up", "PostgreSQL answered.", value=0.0)
            return
        yield GaugeMetricFamily("conveyor_database_up", "PostgreSQL answered.", value=1.0)
        jobs = GaugeMetricFamily("conveyor_jobs", "Jobs by status.", labels=["status"])
        for status, count in counts.items():
            jobs.add_metric([status], count)
        yield jobs
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


def build_registry(
    sessions: db.Sessions, breaker: RedisBreaker, redis_client: redis.Redis
) -> CollectorRegistry:
    """A registry of this process's own (not the global one: several apps may live in one
    test process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ConveyorCollector(sessions, breaker, redis_client))
    ProcessCollector(registry=registry)
    return registry
