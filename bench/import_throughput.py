"""CSV import throughput through the whole platform, next to ``psql \\copy`` of the same file,
for two declared importers in one run: ``products`` (7 columns, the built-in declaration)
and ``wide`` (30 columns: strings, integers, numbers, dates, date-times, booleans; declared
by tests/wide_csv.py, its table created from the declaration).

Platform: the CSV is uploaded to POST /v1/imports (real API process); a real worker process
parses, validates (every row, against the declared fields) and loads it in batches
(COPY + upsert, one transaction per batch with its checkpoint). Rows/s is measured from the
job's ``started_at`` to its ``finished_at`` (the upload and queueing are reported apart).
Baseline: ``psql \\copy`` of the same file into a table shaped like the importer's (``LIKE
... INCLUDING ALL``: same columns, types and primary key), no validation, timed around the
psql process.

Also: the peak RSS of the worker's pool process that ran the import (VmHWM) and of the
import's reader process (which parses and validates; its peak is logged by the worker), for
a small and a large file, each on a freshly started worker: memory must not grow with the
file.

Run: .venv/bin/python bench/import_throughput.py [--rows 1000000] [--small-rows 100000]
     [--runs 3] [--batch-rows 10000] [--multiline-every 0] [--schemas products,wide]
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

import shutil
from collections.abc import Callable
from dataclasses import dataclass

import yaml

from core import db
from core.imports.ddl import create_table_sql
from core.imports.declaration import parse_declaration
from core.settings import BUILTIN_IMPORTERS_DIR, Settings
from tests import services, wide_csv
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


@dataclass(frozen=True)
class Schema:
    name: str  # the importer, and its table
    header: list[str]
    write: Callable[[Path, int], Path]


def _schemas(args: argparse.Namespace) -> dict[str, Schema]:
    def products(path: Path, rows: int) -> Path:
        return write_products_csv(path, rows, multiline_every=args.multiline_every)

    return {
        "products": Schema("products", HEADER, products),
        "wide": Schema("wide", wide_csv.HEADER, wide_csv.write_wide_csv),
    }


def _psql(settings: Settings, *commands: str) -> None:
    argv = ["psql", settings.libpq_url, "-q"]
    for command in commands:
        argv += ["-c", command]
    subprocess.run(argv, check=True)


def _copy_baseline(settings: Settings, schema: Schema, path: Path) -> float:
    columns = ", ".join(f'"{name}"' for name in schema.header)
    _psql(
        settings,
        "DROP TABLE IF EXISTS bench_copy",
        f'CREATE TABLE bench_copy (LIKE "{schema.name}" INCLUDING ALL)',
    )
    started = time.perf_counter()
    _psql(settings, f"\\copy bench_copy ({columns}) FROM '{path}' WITH (FORMAT csv, HEADER)")
    return time.perf_counter() - started


def _import(client: httpx.Client, importer: str, path: Path) -> dict[str, Any]:
    started = time.perf_counter()
    with path.open("rb") as file:
        response = client.post(
            "/v1/imports", data={"importer": importer}, files={"file": (path.name, file)}
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


def _truncate(sessions: db.Sessions, table: str) -> None:
    with db.transaction(sessions) as session:
        session.execute(sa.text(f'TRUNCATE "{table}", import_errors'))


def _reader_rss_peak(worker: services.Process) -> int:
    """Peak RSS (kB) of the import's reader process, as its worker logged it."""
    peaks = [
        json.loads(line)["reader_max_rss_kb"]
        for line in worker.output().splitlines()
        if '"import.reader_finished"' in line
    ]
    return int(peaks[-1])


def _measured_import(
    platform: services.Platform, client: httpx.Client, importer: str, path: Path
) -> tuple[dict[str, Any], tuple[int, int]]:
    """Import on a freshly started worker, so peak RSS figures belong to this file alone."""
    worker = platform.start_worker(queues="imports", concurrency=1)
    outcome = _import(client, importer, path)
    rss = (_pool_child_rss_peak(worker), _reader_rss_peak(worker))
    worker.stop()
    return outcome, rss


@dataclass
class Measured:
    schema: Schema
    rows: int
    size_mb: float
    copies: list[float]
    imports: list[dict[str, Any]]
    rss: list[tuple[int, int]]


def _importers_dir(tmp: Path) -> Path:
    directory = tmp / "importers"
    directory.mkdir()
    shutil.copy(BUILTIN_IMPORTERS_DIR / "products.yaml", directory)
    (directory / "wide.yaml").write_text(yaml.safe_dump(wide_csv.declaration()))
    return directory


def _measure(
    args: argparse.Namespace,
    schema: Schema,
    settings: Settings,
    sessions: db.Sessions,
    platform: services.Platform,
    client: httpx.Client,
    tmp: Path,
) -> Measured:
    path = schema.write(tmp / f"{schema.name}.csv", args.rows)
    measured = Measured(schema, args.rows, path.stat().st_size / 1e6, [], [], [])
    print(f"{schema.name}: {len(schema.header)} columns, {measured.size_mb:.0f} MB", flush=True)
    for number in range(1, args.runs + 1):
        _truncate(sessions, schema.name)
        measured.copies.append(_copy_baseline(settings, schema, path))
        outcome, rss = _measured_import(platform, client, schema.name, path)
        measured.imports.append(outcome)
        measured.rss.append(rss)
        print(
            f"  run {number}: \\copy {measured.copies[-1]:.2f} s, import "
            f"{outcome['job_s']:.2f} s (upload {outcome['upload_s']:.2f} s)",
            flush=True,
        )
    path.unlink()
    return measured


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
        importers_dir=_importers_dir(tmp),
    )
    engine = db.make_engine(settings)
    sessions = db.make_sessionmaker(engine)
    key = services.new_api_key(sessions, settings, name="bench")
    # The wide table as its declaration creates it, so \copy's LIKE has it to copy.
    _psql(settings, create_table_sql(parse_declaration("wide", wide_csv.declaration())))
    schemas = _schemas(args)
    (tmp / "logs").mkdir()
    results: list[Measured] = []
    rss_small: tuple[int, int] | None = None
    try:
        with services.platform(settings_env(settings), tmp / "logs") as platform:
            platform.start_api()
            assert platform.api_url
            client = httpx.Client(
                base_url=platform.api_url, timeout=300, headers={"Authorization": f"Bearer {key}"}
            )
            if args.small_rows:
                small = write_products_csv(tmp / "small.csv", args.small_rows)
                _truncate(sessions, "products")
                _, rss_small = _measured_import(platform, client, "products", small)
            for schema_name in args.schemas.split(","):
                schema = schemas[schema_name]
                results.append(_measure(args, schema, settings, sessions, platform, client, tmp))
            client.close()
    finally:
        engine.dispose()
        redis_server.stop()
        services.drop_database(name)
        shutil.rmtree(tmp, ignore_errors=True)
    _report(args, results, rss_small)


def _report(
    args: argparse.Namespace, results: list[Measured], rss_small: tuple[int, int] | None
) -> None:
    print()
    print(
        f"rows: {args.rows:,} per file (batch {args.batch_rows:,}, products multi-line "
        f"description every {args.multiline_every or 'never'}); medians of {args.runs} runs"
    )
    for measured in results:
        copy_s = statistics.median(measured.copies)
        job_s = statistics.median(outcome["job_s"] for outcome in measured.imports)
        upload_s = statistics.median(outcome["upload_s"] for outcome in measured.imports)
        result = measured.imports[0]["job"]["result"]
        copy_rate, import_rate = measured.rows / copy_s, measured.rows / job_s
        big = max(measured.rss)
        print(
            f"{measured.schema.name} ({len(measured.schema.header)} columns, "
            f"{measured.size_mb:.0f} MB):"
        )
        print(f"  psql \\copy:            {copy_s:6.2f} s  {copy_rate:10,.0f} rows/s")
        print(
            f"  conveyor import (job): {job_s:6.2f} s  {import_rate:10,.0f} rows/s"
            f"  ratio {import_rate / copy_rate:.2f} of \\copy"
        )
        print(f"  upload (HTTP, streamed to storage): {upload_s:.2f} s")
        print(f"  result: inserted {result['inserted']:,}, rejected {result['rejected']:,}")
        print(
            f"  peak RSS, worker pool process / reader process: "
            f"{big[0] / 1024:.0f} / {big[1] / 1024:.0f} MB"
        )
    if rss_small is not None:
        print(
            f"products at {args.small_rows:,} rows, peak RSS worker pool / reader: "
            f"{rss_small[0] / 1024:.0f} / {rss_small[1] / 1024:.0f} MB"
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
    parser.add_argument("--schemas", default="products,wide", help="comma-separated")
    run(parser.parse_args())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
