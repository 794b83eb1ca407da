"""Bulk submit: ``POST /v1/jobs/batch`` (batches of 500) until every job is committed and
published to Redis, next to raw Celery publishing the same number of tasks through kombu's
``Producer.batch()`` (pipelined, batches of 500) on the same Redis. No worker runs: this is
the submit path alone.

Run: .venv/bin/python bench/bulk_throughput.py [--jobs 20000] [--batch 500] [--clients 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import time
from pathlib import Path

import httpx
import redis
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.proc_cpu import tree_cpu_seconds
from bench.throwaway import throwaway
from core import db
from core.models import Job
from core.settings import Settings
from tests import services
from tests.conftest import settings_env


def _shares(total: int, batch: int, clients: int) -> list[list[int]]:
    sizes = [min(batch, total - start) for start in range(0, total, batch)]
    return [sizes[index::clients] for index in range(clients)]


def platform_run(
    settings: Settings, sessions: db.Sessions, args: argparse.Namespace, log_dir: Path
) -> tuple[float, float]:
    """Seconds until every job is published, and the API's CPU seconds meanwhile."""
    key = services.new_api_key(sessions, settings, name="bench")
    env = settings_env(settings)
    env["CONVEYOR_LOG_LEVEL"] = "WARNING"
    with services.platform(env, log_dir) as platform:
        api = platform.start_api(workers=args.api_workers)
        assert platform.api_url
        url = platform.api_url

        def submit(sizes: list[int]) -> None:
            with httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as client:
                for size in sizes:
                    response = client.post(
                        "/v1/jobs/batch", json={"jobs": [{"kind": "noop"}] * size}
                    )
                    response.raise_for_status()
                    assert response.json()["created"] == size

        cpu = tree_cpu_seconds(api.popen.pid)
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(submit, _shares(args.jobs, args.batch, args.clients)))
        waiting = args.jobs
        while waiting:
            with db.transaction(sessions) as session:
                waiting = (
                    session.scalar(sa.select(sa.func.count()).where(Job.dispatched_at.is_(None)))
                    or 0
                )
            if waiting:
                time.sleep(0.01)
        elapsed = time.perf_counter() - start
        return elapsed, tree_cpu_seconds(api.popen.pid) - cpu


def raw_run(redis_url: str, args: argparse.Namespace) -> float:
    from bench.raw_celery_app import app, noop

    app.conf.broker_url = redis_url

    def publish(sizes: list[int]) -> None:
        with app.producer_or_acquire() as producer:
            for size in sizes:
                with producer.batch(max_size=4 * size + 16):
                    for _ in range(size):
                        noop.apply_async(queue="raw", producer=producer)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(publish, _shares(args.jobs, args.batch, args.clients)))
    elapsed = time.perf_counter() - start
    assert redis.Redis.from_url(redis_url).llen("raw") == args.jobs
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--api-workers", type=int, default=1)
    args = parser.parse_args()

    with throwaway() as spare:
        settings = spare.settings()
        engine = db.make_engine(settings)
        sessions = db.make_sessionmaker(engine)
        ours, api_cpu = platform_run(settings, sessions, args, spare.directory)
        engine.dispose()
        redis.Redis.from_url(spare.redis.url).flushdb()
        raw = raw_run(spare.redis.url, args)

    ours_rate, raw_rate = args.jobs / ours, args.jobs / raw
    print(
        f"jobs={args.jobs} batch={args.batch} clients={args.clients} "
        f"api processes={args.api_workers}"
    )
    print(
        f"conveyor (POST /v1/jobs/batch -> committed + published): {ours_rate:8.0f} jobs/s "
        f"({ours:.2f} s)  API CPU/job {1000 * api_cpu / args.jobs:.3f} ms"
    )
    print(
        f"raw celery (Producer.batch pipelined publish):          {raw_rate:8.0f} tasks/s "
        f"({raw:.2f} s)"
    )
    print(f"ratio conveyor/raw: {ours_rate / raw_rate:.2f}")


if __name__ == "__main__":
    main()
