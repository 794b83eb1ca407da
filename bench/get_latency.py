"""API latency with wrk: ``GET /v1/jobs/{id}`` (authenticated, visibility-checked) against a
bare FastAPI app doing one primary-key SELECT on the same database with the same server
settings; then ``POST /v1/jobs`` from 32 connections, back to back (saturation: throughput,
p50, p99, API CPU per submit) and paced (each client pauses between submits).

Run: .venv/bin/python bench/get_latency.py [--seconds 5] [--rounds 3] [--connections 32]
     [--api-workers 1] [--pause-ms 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
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
        "bench.bare_get_app:create_app",
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
    env = {**os.environ, "BENCH_DATABASE_URL": settings.libpq_url}
    process = services.Process("bare-api", argv, env, log_dir)
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/docs", process)
    return process, url


def _median(runs: list[wrk.WrkResult]) -> wrk.WrkResult:
    return sorted(runs, key=lambda run: run.requests_per_second)[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="alternated GET runs of each")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument(
        "--pause-ms", type=float, default=100, help="paced run: each client's pause between submits"
    )
    args = parser.parse_args()

    with throwaway() as spare:
        settings = Settings(
            env="test",
            database_url=spare.database_url,
            redis_url=spare.redis.url,
            storage_dir=spare.directory / "storage",
            auth_failure_limit=10**6,
        )
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
            try:
                # Alternated, medians kept: other load on the machine hits both alike.
                ours_runs, bare_runs = [], []
                for _ in range(args.rounds):
                    ours_runs.append(
                        wrk.run(
                            f"{api_url}/v1/jobs/{job['id']}",
                            connections=args.connections,
                            seconds=args.seconds,
                            headers=auth,
                        )
                    )
                    bare_runs.append(
                        wrk.run(
                            f"{bare_url}/jobs/{job['id']}",
                            connections=args.connections,
                            seconds=args.seconds,
                        )
                    )
            finally:
                bare.stop()
            ours, baseline = _median(ours_runs), _median(bare_runs)
            cpu_before = tree_cpu_seconds(api.popen.pid)
            started = time.perf_counter()
            submit = wrk.run(
                f"{api_url}/v1/jobs",
                connections=args.connections,
                seconds=args.seconds,
                headers={**auth, "Content-Type": "application/json"},
                method="POST",
                body=NOOP,
            )
            submit_wall = time.perf_counter() - started
            submit_cpu = tree_cpu_seconds(api.popen.pid) - cpu_before
            paced = wrk.run(
                f"{api_url}/v1/jobs",
                connections=args.connections,
                seconds=args.seconds,
                headers={**auth, "Content-Type": "application/json"},
                method="POST",
                body=NOOP,
                pause_ms=args.pause_ms,
            )
        engine.dispose()

    print(
        f"wrk -t1 -c{args.connections} -d{args.seconds:g}s, GET: median of {args.rounds} "
        f"alternated runs each; API processes: {args.api_workers}"
    )
    print(
        f"GET /v1/jobs/{{id}} (auth + visibility):  {ours.requests_per_second:8.0f} req/s  "
        f"p50 {ours.p50_ms:6.2f} ms  p99 {ours.p99_ms:6.2f} ms  errors {ours.errors}"
    )
    print(
        f"bare FastAPI + one PK SELECT:            {baseline.requests_per_second:8.0f} req/s  "
        f"p50 {baseline.p50_ms:6.2f} ms  p99 {baseline.p99_ms:6.2f} ms  errors {baseline.errors}"
    )
    print(f"ratio GET ours/bare: {ours.requests_per_second / baseline.requests_per_second:.2f}")
    print(
        f"POST /v1/jobs at {args.connections} connections: "
        f"{submit.requests_per_second:.0f} submits/s  p50 {submit.p50_ms:.2f} ms  "
        f"p99 {submit.p99_ms:.2f} ms  errors {submit.errors}  "
        f"API CPU {1000 * submit_cpu / max(1, submit.requests):.2f} ms/submit "
        f"({submit_cpu / submit_wall:.2f} cores)"
    )
    print(
        f"POST /v1/jobs, {args.connections} clients each pausing {args.pause_ms:g} ms: "
        f"{paced.requests_per_second:.0f} submits/s  p50 {paced.p50_ms:.2f} ms  "
        f"p99 {paced.p99_ms:.2f} ms  errors {paced.errors}"
    )


if __name__ == "__main__":
    main()
