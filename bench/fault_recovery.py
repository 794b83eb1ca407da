"""Fault recovery, measured on real processes (uvicorn API, 2 prefork workers, no beat) and a
private redis-server that is really stopped, frozen and restarted:

1. submit latency (POST /v1/jobs -> 202) with Redis up, stopped, and frozen (SIGSTOP);
2. time from Redis' return (restarted empty, same port) until the backlog submitted while
   it was down has all succeeded, and until the API's breaker closed;
3. the reaper's recovery time: a worker SIGKILLed mid-job -> the job running again on the
   other worker (and -> succeeded), Redis' visibility timeout left at its 1 h default.

Settings are the production defaults unless overridden on the command line.

Run: .venv/bin/python bench/fault_recovery.py [--jobs 200] [--rate 50]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import cast

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throwaway import throwaway
from core import db
from core.models import Job
from core.settings import Settings
from tests import services
from tests.conftest import settings_env
from tests.submit_load import Submitted, percentile, submit_steadily

CLIENTS = 4


def _succeeded(sessions: db.Sessions, job_ids: list[str]) -> int:
    with db.transaction(sessions) as session:
        return int(
            session.scalar(
                sa.select(sa.func.count()).where(Job.id.in_(job_ids), Job.status == "succeeded")
            )
            or 0
        )


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Seconds until ``predicate`` held."""
    started = time.monotonic()
    services.wait_until(predicate, timeout=timeout, interval=0.02, message=what)
    return time.monotonic() - started


def _latency_line(label: str, results: list[Submitted]) -> str:
    latencies = [r.seconds * 1000 for r in results]
    statuses = sorted({r.status for r in results})
    return (
        f"{label:<40} N={len(results)}: p50 {percentile(latencies, 0.5):6.1f} ms   "
        f"p99 {percentile(latencies, 0.99):6.1f} ms   max {max(latencies):6.1f} ms   "
        f"statuses {statuses}"
    )


def _breaker_state(api_url: str) -> str:
    return str(httpx.get(f"{api_url}/health/circuit-breaker", timeout=5).json()["state"])


def _ids(results: list[Submitted]) -> list[str]:
    return [r.job_id for r in results if r.job_id]


class Bench:
    def __init__(
        self,
        settings: Settings,
        sessions: db.Sessions,
        redis: services.RedisServer,
        args: argparse.Namespace,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.redis = redis
        self.args = args

    def submit(self, client: httpx.Client) -> list[Submitted]:
        return submit_steadily(client, count=self.args.jobs, rate=self.args.rate, clients=CLIENTS)

    def redis_up(self, client: httpx.Client, label: str) -> None:
        results = self.submit(client)
        print(_latency_line(label, results), flush=True)

    def drain(self, timeout: float = 180) -> None:
        """Until no job is waiting or running."""

        def idle() -> bool:
            with db.transaction(self.sessions) as session:
                busy = session.scalar(
                    sa.select(sa.func.count()).where(Job.status.in_(["queued", "running"]))
                )
            return busy == 0

        _wait(idle, timeout, "all jobs finished")

    def redis_stopped(self, client: httpx.Client, api_url: str) -> None:
        self.redis.stop()
        results = self.submit(client)
        print(_latency_line("submit, Redis stopped", results), flush=True)
        time.sleep(1.0)
        self.redis.start()  # same port, empty
        returned = time.monotonic()
        job_ids = _ids(results)
        seen: dict[str, float] = {}
        while len(seen) < 2:
            if "drained" not in seen and _succeeded(self.sessions, job_ids) == len(job_ids):
                seen["drained"] = time.monotonic() - returned
            if "closed" not in seen and _breaker_state(api_url) == "closed":
                seen["closed"] = time.monotonic() - returned
            if time.monotonic() - returned > 300:
                raise TimeoutError(f"after Redis' return: {seen}")
            time.sleep(0.02)
        print(
            f"Redis back (empty) -> all {len(job_ids)} jobs submitted while it was down "
            f"succeeded: {seen['drained']:5.2f} s  (the API's breaker closed after "
            f"{seen['closed']:5.2f} s; the relay in the workers did not wait for it)",
            flush=True,
        )

    def redis_frozen(self, client: httpx.Client) -> None:
        self.redis.pause()
        try:
            results = self.submit(client)
        finally:
            self.redis.resume()
        resumed = time.monotonic()
        print(_latency_line("submit, Redis frozen (SIGSTOP)", results), flush=True)
        _wait(lambda: _succeeded(self.sessions, _ids(results)) == len(results), 180, "drain")
        print(
            f"Redis resumed -> all {len(results)} jobs succeeded: "
            f"{time.monotonic() - resumed:5.2f} s",
            flush=True,
        )

    def reaper(self, client: httpx.Client, workers: list[services.Process]) -> None:
        seconds, steps = self.args.job_seconds, self.args.job_seconds * 5
        body = {"kind": "sleep", "params": {"seconds": seconds, "steps": steps}}
        job_id = client.post("/v1/jobs", json=body).json()["id"]

        def load() -> Job:
            with db.transaction(self.sessions) as session:
                job = session.get(Job, uuid.UUID(job_id))
                assert job is not None
                return job

        _wait(lambda: load().progress_done >= steps // 4, 60, "progress")
        owner = load().lease_owner or ""
        doomed = next(w for w in workers if owner.startswith(_worker_name(w) + "@"))
        done_before = load().progress_done
        doomed.kill_group()
        killed = time.monotonic()
        _wait(lambda: load().attempt == 2, 300, "second attempt")
        reclaimed = time.monotonic() - killed
        _wait(lambda: load().status == "succeeded", 300, "job succeeded")
        finished = time.monotonic() - killed
        left = seconds * (steps - done_before) / steps
        print(
            f"reaper: worker SIGKILLed mid-job -> job running again on the other worker: "
            f"{reclaimed:5.2f} s (bound lease+reaper interval = "
            f"{self.settings.lease_seconds + self.settings.reaper_interval:g} s); "
            f"-> succeeded: {finished:5.2f} s (work left at the kill ~{left:.1f} s, "
            f"resumed from its checkpoint)",
            flush=True,
        )


def _worker_name(process: services.Process) -> str:
    argv = [str(a) for a in cast(list[str], process.popen.args)]
    return argv[argv.index("--hostname") + 1].split("@")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50, help="submits per second, in all")
    defaults = Settings.model_fields
    parser.add_argument("--lease-seconds", type=float, default=defaults["lease_seconds"].default)
    parser.add_argument(
        "--reaper-interval", type=float, default=defaults["reaper_interval"].default
    )
    parser.add_argument("--job-seconds", type=int, default=20, help="the reaped sleep job")
    args = parser.parse_args()

    with throwaway() as spare:
        settings = spare.settings(
            lease_seconds=args.lease_seconds, reaper_interval=args.reaper_interval
        )
        try:
            run(settings, spare.redis, args, spare.directory)
        finally:
            spare.redis.resume() if spare.redis.process else None


def run(
    settings: Settings, redis: services.RedisServer, args: argparse.Namespace, tmp: Path
) -> None:
    print(
        "settings: "
        + " ".join(
            f"{key}={getattr(settings, key)}"
            for key in (
                "redis_socket_timeout",
                "breaker_fail_max",
                "breaker_reset_timeout",
                "relay_interval",
                "lease_seconds",
                "reaper_interval",
                "reaper_bound_seconds",
                "database_connect_timeout",
            )
        )
    )
    print(
        f"load: {args.jobs} noop submits at {args.rate:g}/s over {CLIENTS} HTTP clients; "
        "1 API process, 2 workers (prefork, concurrency 2), no beat; Redis on a private port",
        flush=True,
    )
    engine = db.make_engine(settings)
    sessions = db.make_sessionmaker(engine)
    key = services.new_api_key(sessions, settings, name="bench")
    bench = Bench(settings, sessions, redis, args)
    try:
        with services.platform(settings_env(settings), tmp) as platform:
            platform.start_api()
            assert platform.api_url
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=platform.api_url, headers=headers, timeout=30) as client:
                submit_steadily(client, count=50, rate=args.rate)  # warm-up, not measured
                bench.redis_up(client, "submit, Redis up, no worker running")
                workers = [platform.start_worker(queues="default", concurrency=2) for _ in range(2)]
                bench.drain()
                bench.redis_up(client, "submit, Redis up, workers running them")
                bench.drain()
                bench.redis_stopped(client, platform.api_url)
                bench.redis_frozen(client)
                bench.drain()
                bench.reaper(client, workers)
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
