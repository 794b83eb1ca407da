"""The baseline for bench/noop_throughput.py: plain Celery, same broker, same worker flags."""

from __future__ import annotations

import os

import redis
from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")

app = Celery("raw", broker=REDIS_URL)
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    task_reject_on_worker_lost=True,
)
_counter = redis.Redis.from_url(REDIS_URL)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop() -> None:
    # The platform's no-op records `succeeded` durably; the raw baseline records completion
    # in Redis so the benchmark can tell when every task has run.
    _counter.incr("bench:done")
