"""API latency with wrk, against a bare FastAPI app on the same database and Redis with the
same server settings (bench/bare_app.py): ``GET /v1/jobs/{id}`` (authenticated,
visibility-checked) vs one primary-key SELECT; then ``POST /v1/jobs`` vs one INSERT and one
LPUSH, from 32 connections back to back (saturation: throughput, p50, p99, API CPU per
submit) and paced (each client pauses between submits). Runs of ours and the bare app
alternate, medians kept.

Run: .venv/bin/python bench/get_latency.py [--seconds 5] [--rounds 3] [--connections 32]
     [--api-workers 1] [--pause-ms 100]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import wrk
from bench.proc_cpu import tree_cpu_seconds
from bench.throwaway import throwaway
from core import db
from core.settings import Settings
from tests import services
from tests.conftest import settings_env

NOOP = json.dumps({"kind": "noop", "params": {}})


def _wait_http(url: str, process: services.Process) -> None:
    def up() -> bool:
        if process.popen.poll() is not None:
            raise RuntimeError(process.output())
        try:
            return httpx.get(url, timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    services.wait_until(up, timeout=30, message=url)


def bare_app(settings: Settings, log_dir: Path) -> tuple[services.Process, str]:
    port = services.free_port()
    argv = [
        str(services.VENV_BIN / "python"),
        "-m",
        "uvicorn",
        "--factory",
        "bench.bare_app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--http",
        "api.http_protocol:BoundedHttpToolsProtocol",
        "--log-level",
        "warning",
    ]
    env = {
        **os.environ,
        "BENCH_DATABASE_URL": settings.libpq_url,
        "BENCH_REDIS_URL": settings.redis_url,
    }
    process = services.Process("bare-api", argv, env, log_dir)
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/docs", process)
    return process, url


def _median(runs: list[wrk.WrkResult]) -> wrk.WrkResult:
    return sorted(runs, key=lambda run: run.requests_per_second)[len(runs) // 2]


@dataclass
class Pair:
    """Median runs of ours and of the bare app, and the API's CPU over all of ours."""

    ours: wrk.WrkResult
    bare: wrk.WrkResult
    api_cpu_ms: float  # per request
    api_cores: float

    @property
    def ratio(self) -> float:
        return self.ours.requests_per_second / self.bare.requests_per_second


def _alternated(
    rounds: int, api_pid: int, ours: Callable[[], wrk.WrkResult], bare: Callable[[], wrk.WrkResult]
) -> Pair:
    """Runs of each in turn, so that other load on the machine hits both alike."""
    ours_runs, bare_runs, cpu, wall = [], [], 0.0, 0.0
    for _ in range(rounds):
        before, started = tree_cpu_seconds(api_pid), time.perf_counter()
        ours_runs.append(ours())
        cpu += tree_cpu_seconds(api_pid) - before
        wall += time.perf_counter() - started
        bare_runs.append(bare())
    requests = sum(run.requests for run in ours_runs)
    return Pair(_median(ours_runs), _median(bare_runs), 1000 * cpu / max(1, requests), cpu / wall)


def _line(label: str, run: wrk.WrkResult) -> str:
    return (
        f"{label:<44}{run.requests_per_second:7.0f} req/s  p50 {run.p50_ms:6.1f} ms  "
        f"p99 {run.p99_ms:6.1f} ms  errors {run.errors}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="alternated runs of each")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument(
        "--pause-ms", type=float, default=100, help="paced run: each client's pause between submits"
    )
    args = parser.parse_args()

    with throwaway() as spare:
        settings = spare.settings(auth_failure_limit=10**6)
        engine = db.make_engine(settings)
        sessions = db.make_sessionmaker(engine)
        key = services.new_api_key(sessions, settings, name="bench")
        auth = {"Authorization": f"Bearer {key}"}
        env = settings_env(settings)
        env["CONVEYOR_LOG_LEVEL"] = "WARNING"
        with services.platform(env, spare.directory) as platform:
            api = platform.start_api(workers=args.api_workers)
            api_url = platform.api_url
            assert api_url
            job = httpx.post(f"{api_url}/v1/jobs", json=json.loads(NOOP), headers=auth).json()
            bare, bare_url = bare_app(settings, spare.directory)
            post_headers = {**auth, "Content-Type": "application/json"}

            def hit(
                url: str,
                headers: dict[str, str] | None = None,
                *,
                post: bool = False,
                pause: bool = False,
            ) -> Callable[[], wrk.WrkResult]:
                return functools.partial(
                    wrk.run,
                    url,
                    connections=args.connections,
                    seconds=args.seconds,
                    headers=headers,
                    method="POST" if post else "GET",
                    body=NOOP if post else None,
                    pause_ms=args.pause_ms if pause else 0,
                )

            pid = api.popen.pid
            try:
                get = _alternated(
                    args.rounds,
                    pid,
                    hit(f"{api_url}/v1/jobs/{job['id']}", auth),
                    hit(f"{bare_url}/jobs/{job['id']}"),
                )
                submit = _alternated(
                    args.rounds,
                    pid,
                    hit(f"{api_url}/v1/jobs", post_headers, post=True),
                    hit(f"{bare_url}/jobs", post_headers, post=True),
                )
                submit_paced = _alternated(
                    args.rounds,
                    pid,
                    hit(f"{api_url}/v1/jobs", post_headers, post=True, pause=True),
                    hit(f"{bare_url}/jobs", post_headers, post=True, pause=True),
                )
            finally:
                bare.stop()
        engine.dispose()

    print(
        f"wrk -t1 -c{args.connections} -d{args.seconds:g}s; median of {args.rounds} alternated "
        f"runs each; API processes: {args.api_workers}"
    )
    print(_line("GET /v1/jobs/{id} (auth + visibility)", get.ours))
    print(_line("bare FastAPI, one PK SELECT", get.bare))
    print(f"ratio GET ours/bare: {get.ratio:.2f}")
    print(_line("POST /v1/jobs, back to back", submit.ours))
    print(_line("bare FastAPI, one INSERT + one LPUSH", submit.bare))
    print(
        f"ratio submit ours/bare: {submit.ratio:.2f}; API CPU {submit.api_cpu_ms:.2f} ms per "
        f"submit ({submit.api_cores:.2f} cores)"
    )
    print(_line(f"POST /v1/jobs, pausing {args.pause_ms:g} ms", submit_paced.ours))
    print(_line(f"bare FastAPI, pausing {args.pause_ms:g} ms", submit_paced.bare))


if __name__ == "__main__":
    main()
