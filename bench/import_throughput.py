"""CSV import throughput through the whole platform, next to ``psql \\copy`` of the same file.

Platform: the CSV is uploaded to POST /v1/imports (real API process); a real worker process
parses, validates (every row, against the products row model) and loads it in batches
(COPY + upsert, one transaction per batch with its checkpoint). Rows/s is measured from the
job's ``started_at`` to its ``finished_at`` (the upload and queueing are reported apart).
Baseline: ``psql \\copy`` of the same file into a table shaped like ``products`` (same
columns, types and primary key), no validation, timed around the psql process.

Also: the peak RSS of the worker's pool process that ran the import (VmHWM) and of the
import's reader process (which parses and validates; its peak is logged by the worker), for
a small and a large file, each on a freshly started worker: memory must not grow with the
file.

Run: .venv/bin/python bench/import_throughput.py [--rows 1000000] [--small-rows 100000]
     [--runs 3] [--batch-rows 10000] [--multiline-every 0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import db
from core.settings import Settings
from tests import services
from tests.conftest import settings_env
from tests.product_csv import HEADER, write_products_csv


def _pool_child_rss_peak(worker: services.Process) -> int:
    """VmHWM (kB) of the prefork pool child of a --concurrency 1 worker (it ran the job)."""
    main = worker.popen.pid
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == main:
                children.append(entry)
    assert len(children) == 1, f"expected one pool child, found {len(children)}"
    for line in (children[0] / "status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def _copy_baseline(settings: Settings, path: Path) -> float:
    url = settings.libpq_url
    columns = ", ".join(HEADER)
    subprocess.run(
        [
            "psql",
            url,
            "-qc",
            "DROP TABLE IF EXISTS bench_copy",
            "-c",
            "CREATE TABLE bench_copy (LIKE products INCLUDING ALL)",
        ],
        check=True,
    )
    started = time.perf_counter()
    subprocess.run(
        [
            "psql",
            url,
            "-qc",
            f"\\copy bench_copy ({columns}) FROM '{path}' WITH (FORMAT csv, HEADER)",
        ],
        check=True,
    )
    return time.perf_counter() - started


def _import(client: httpx.Client, path: Path) -> dict[str, Any]:
    started = time.perf_counter()
    with path.open("rb") as file:
        response = client.post(
            "/v1/imports", data={"importer": "products"}, files={"file": (path.name, file)}
        )
    response.raise_for_status()
    uploaded = time.perf_counter() - started
    job_id = response.json()["id"]
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        time.sleep(0.1)
    assert job["status"] == "succeeded", job
    worked = (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    ).total_seconds()
    return {
        "job": job,
        "upload_s": uploaded,
        "job_s": worked,
        "end_to_end_s": time.perf_counter() - started,
    }


def _truncate(sessions: db.Sessions) -> None:
    with db.transaction(sessions) as session:
        session.execute(sa.text("TRUNCATE products, import_errors"))


def _reader_rss_peak(worker: services.Process) -> int:
    """Peak RSS (kB) of the import's reader process, as its worker logged it."""
    peaks = [
        json.loads(line)["reader_max_rss_kb"]
        for line in worker.output().splitlines()
        if '"import.reader_finished"' in line
    ]
    return int(peaks[-1])


def _measured_import(
    platform: services.Platform, client: httpx.Client, path: Path
) -> tuple[dict[str, Any], tuple[int, int]]:
    """Import on a freshly started worker, so peak RSS figures belong to this file alone."""
    worker = platform.start_worker(queues="imports", concurrency=1)
    outcome = _import(client, path)
    rss = (_pool_child_rss_peak(worker), _reader_rss_peak(worker))
    worker.stop()
    return outcome, rss


def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    name = services.unique_name("conveyor_bench")
    url = services.create_migrated_database(name)
    redis_server = services.RedisServer(tmp)
    redis_server.start()
    settings = Settings(
        env="test",
        database_url=url,
        redis_url=redis_server.url,
        storage_dir=tmp / "storage",
        import_batch_rows=args.batch_rows,
    )
    engine = db.make_engine(settings)
    sessions = db.make_sessionmaker(engine)
    key = services.new_api_key(sessions, settings, name="bench")
    print(f"generating {args.rows:,} and {args.small_rows:,}-row CSVs ...", flush=True)
    wrinkles = {"multiline_every": args.multiline_every}
    big = write_products_csv(tmp / "big.csv", args.rows, **wrinkles)
    small = write_products_csv(tmp / "small.csv", args.small_rows, **wrinkles)
    print(f"  {big.stat().st_size / 1e6:.0f} MB and {small.stat().st_size / 1e6:.0f} MB")
    (tmp / "logs").mkdir()
    copies: list[float] = []
    imports: list[dict[str, Any]] = []
    rss_big: list[tuple[int, int]] = []
    try:
        with services.platform(settings_env(settings), tmp / "logs") as platform:
            platform.start_api()
            assert platform.api_url
            client = httpx.Client(
                base_url=platform.api_url, timeout=300, headers={"Authorization": f"Bearer {key}"}
            )
            _truncate(sessions)
            _, rss_small = _measured_import(platform, client, small)
            for number in range(1, args.runs + 1):
                _truncate(sessions)
                copies.append(_copy_baseline(settings, big))
                outcome, rss = _measured_import(platform, client, big)
                imports.append(outcome)
                rss_big.append(rss)
                print(
                    f"  run {number}: \\copy {copies[-1]:.2f} s, import {outcome['job_s']:.2f} s"
                    f" (upload {outcome['upload_s']:.2f} s)",
                    flush=True,
                )
            client.close()
    finally:
        engine.dispose()
        redis_server.stop()
        services.drop_database(name)
    _report(args, copies, imports, rss_small, rss_big)


def _report(
    args: argparse.Namespace,
    copies: list[float],
    imports: list[dict[str, Any]],
    rss_small: tuple[int, int],
    rss_big: list[tuple[int, int]],
) -> None:
    copy_s = statistics.median(copies)
    job_s = statistics.median(outcome["job_s"] for outcome in imports)
    upload_s = statistics.median(outcome["upload_s"] for outcome in imports)
    result = imports[0]["job"]["result"]
    copy_rate, import_rate = args.rows / copy_s, args.rows / job_s
    big = max(rss_big)
    print()
    print(
        f"rows: {args.rows:,} (batch {args.batch_rows:,}, multi-line description every "
        f"{args.multiline_every or 'never'}); medians of {args.runs} runs"
    )
    print(f"psql \\copy:            {copy_s:6.2f} s  {copy_rate:10,.0f} rows/s")
    print(
        f"conveyor import (job): {job_s:6.2f} s  {import_rate:10,.0f} rows/s"
        f"  ratio {import_rate / copy_rate:.2f} of \\copy"
    )
    print(f"  upload (HTTP, streamed to storage): {upload_s:.2f} s")
    print(f"  result: inserted {result['inserted']:,}, rejected {result['rejected']:,}")
    print(
        f"peak RSS, worker pool process / reader process: "
        f"{rss_small[0] / 1024:.0f} / {rss_small[1] / 1024:.0f} MB at {args.small_rows:,} rows, "
        f"{big[0] / 1024:.0f} / {big[1] / 1024:.0f} MB at {args.rows:,} rows"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small-rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument(
        "--multiline-every", type=int, default=0, help="every Nth description spans two lines"
    )
    run(parser.parse_args())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
