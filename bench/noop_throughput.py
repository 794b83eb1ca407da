"""No-op job throughput through the whole platform, next to raw Celery on the same Redis.

Platform: HTTP POST /v1/jobs -> PostgreSQL row -> Redis -> worker claims -> `succeeded` in
PostgreSQL; measured from the first submit until the last job is succeeded.
Baseline: raw Celery `apply_async` of a no-op task to a worker with the same flags (prefork,
concurrency 2, task events, acks_late, prefetch 1) on the same Redis, measured until every
task ran (counted in a Redis key). CPU per job: user + system time of the API processes and
of the worker (main + pool processes), divided by the jobs.

Run: .venv/bin/python bench/noop_throughput.py [--jobs 2000] [--clients 8]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
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

RAW_APP = "bench.raw_celery_app:app"


@dataclass(frozen=True)
class Run:
    seconds: float
    submitted: float  # when the last submit was answered (or published, raw)
    server_cpu: float  # the API processes (platform) or nothing (raw: the publisher is us)
    worker_cpu: float  # the worker's main process and its pool processes


def _submit_all(api_url: str, key: str, jobs: int, clients: int) -> None:
    def submit_batch(count: int) -> None:
        with httpx.Client(
            base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            for _ in range(count):
                response = client.post("/v1/jobs", json={"kind": "noop", "params": {}})
                response.raise_for_status()

    share = [jobs // clients + (1 if i < jobs % clients else 0) for i in range(clients)]
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(submit_batch, share))


def platform_run(
    settings: Settings,
    sessions: db.Sessions,
    jobs: int,
    clients: int,
    workers: int,
    log_dir: Path,
    api_workers: int,
) -> Run:
    key = services.new_api_key(sessions, settings, name="bench")
    env = settings_env(settings)
    env["CONVEYOR_LOG_LEVEL"] = "WARNING"
    with services.platform(env, log_dir) as platform:
        api = platform.start_api(workers=api_workers)
        worker_processes = [
            platform.start_worker(
                queues="default", concurrency=2, extra_env={"CONVEYOR_LOG_LEVEL": "INFO"}
            )
            for _ in range(workers)
        ]
        assert platform.api_url
        api_cpu = tree_cpu_seconds(api.popen.pid)
        worker_cpu = sum(tree_cpu_seconds(w.popen.pid) for w in worker_processes)
        start = time.perf_counter()
        _submit_all(platform.api_url, key, jobs, clients)
        submitted = time.perf_counter() - start
        succeeded = 0
        while succeeded < jobs:
            with db.transaction(sessions) as session:
                succeeded = (
                    session.scalar(sa.select(sa.func.count()).where(Job.status == "succeeded")) or 0
                )
            time.sleep(0.02)
        return Run(
            seconds=time.perf_counter() - start,
            submitted=submitted,
            server_cpu=tree_cpu_seconds(api.popen.pid) - api_cpu,
            worker_cpu=sum(tree_cpu_seconds(w.popen.pid) for w in worker_processes) - worker_cpu,
        )


def process_ready(process: services.Process) -> Callable[[], bool]:
    return lambda: "ready." in process.output()


def raw_celery_run(redis_url: str, jobs: int, clients: int, workers: int, log_dir: Path) -> Run:
    env = {**os.environ, "BENCH_REDIS_URL": redis_url}
    counter = redis.Redis.from_url(redis_url)
    counter.delete("bench:done")
    processes = []
    for index in range(workers):
        argv = [
            str(services.VENV_BIN / "celery"),
            "-A",
            RAW_APP,
            "worker",
            "-Q",
            "raw",
            "-c",
            "2",
            # The flags `conveyor worker` gives Celery (cli/launch.py): prefork, task events
            # for Flower (-E), no gossip or mingle.
            "-P",
            "prefork",
            "-E",
            "-n",
            f"raw{index}@%h",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
        ]
        process = services.Process("raw-worker", argv, env, log_dir)
        processes.append(process)
        services.wait_until(process_ready(process), timeout=60, message="raw worker ready")
    try:
        from bench.raw_celery_app import app, noop

        app.conf.broker_url = redis_url
        worker_cpu = sum(tree_cpu_seconds(p.popen.pid) for p in processes)
        start = time.perf_counter()

        def publish(count: int) -> None:
            for _ in range(count):
                noop.apply_async(queue="raw")

        share = [jobs // clients + (1 if i < jobs % clients else 0) for i in range(clients)]
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(publish, share))
        submitted = time.perf_counter() - start
        while int(counter.get("bench:done") or 0) < jobs:
            time.sleep(0.02)
        return Run(
            seconds=time.perf_counter() - start,
            submitted=submitted,
            server_cpu=0.0,
            worker_cpu=sum(tree_cpu_seconds(p.popen.pid) for p in processes) - worker_cpu,
        )
    finally:
        for process in processes:
            process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--api-workers", type=int, default=1, help="conveyor api --workers")
    args = parser.parse_args()

    with throwaway() as spare:
        redis_url = spare.redis.url
        settings = spare.settings()
        engine = db.make_engine(settings)
        sessions = db.make_sessionmaker(engine)
        ours = platform_run(
            settings,
            sessions,
            args.jobs,
            args.clients,
            args.workers,
            spare.directory,
            args.api_workers,
        )
        engine.dispose()
        redis.Redis.from_url(redis_url).flushdb()
        raw = raw_celery_run(redis_url, args.jobs, args.clients, args.workers, spare.directory)

    ms = 1000 / args.jobs
    platform_rate = args.jobs / ours.seconds
    raw_rate = args.jobs / raw.seconds
    print(
        f"jobs={args.jobs} clients={args.clients} workers={args.workers} (concurrency 2 each) "
        f"api processes={args.api_workers}"
    )
    print(
        f"conveyor (HTTP submit -> succeeded in PostgreSQL): {platform_rate:8.0f} jobs/s "
        f"({ours.seconds:.2f} s; all submitted at {ours.submitted:.2f} s)  "
        f"CPU/job: API {ours.server_cpu * ms:.2f} ms, worker {ours.worker_cpu * ms:.2f} ms"
    )
    print(
        f"raw celery (apply_async -> task ran):              {raw_rate:8.0f} tasks/s "
        f"({raw.seconds:.2f} s; all published at {raw.submitted:.2f} s)  "
        f"CPU/task: worker {raw.worker_cpu * ms:.2f} ms"
    )
    print(f"ratio conveyor/raw: {platform_rate / raw_rate:.2f}")


if __name__ == "__main__":
    main()
