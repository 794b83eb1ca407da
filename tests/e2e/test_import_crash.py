"""Crash and replay: the worker running a 100,000-row import is SIGKILLed (its whole process
group) three times at different points, with no beat running; each time the reaper in the
API process puts the job back within the recovery bound and a fresh worker takes over. The
final table and the counts must equal a clean run's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from core import db
from core.models import ImportRowError
from tests.e2e.import_support import (
    ImportPlatform,
    clean_imports,
    import_settings,
    running_import_platform,
)
from tests.product_csv import products_csv

pytestmark = pytest.mark.e2e

ROWS = 100_000
BATCH_ROWS = 1_000
KILL_AT = (0.15, 0.45, 0.75)  # share of rows committed when the worker is killed
COUNTS = ("rows_total", "valid", "inserted", "updated", "unchanged", "rejected")
# Every column, in a stable text form, hashed in key order: equal hashes = equal tables.
TABLE_DIGEST = sa.text(
    "SELECT count(*), md5(string_agg(concat_ws('|', sku, name, description, price::text, "
    "quantity::text, category, extract(epoch FROM updated_at)::text), E'\\n' ORDER BY sku)) "
    "FROM products"
)


@pytest.fixture(scope="module")
def imports(database_url, session_redis, engine, tmp_path_factory) -> Iterator[ImportPlatform]:
    tmp = tmp_path_factory.mktemp("import-crash")
    settings = import_settings(
        database_url, session_redis, tmp / "storage", import_batch_rows=BATCH_ROWS
    )
    yield from running_import_platform(settings, engine, tmp / "logs")


def _digest(imports: ImportPlatform) -> tuple[int, str]:
    with db.transaction(imports.sessions) as session:
        count, digest = session.execute(TABLE_DIGEST).one()
    return int(count), str(digest)


def _errors(imports: ImportPlatform, job_id: str) -> list[tuple[int, str | None, str]]:
    with db.transaction(imports.sessions) as session:
        rows = session.execute(
            sa.select(ImportRowError.row, ImportRowError.column, ImportRowError.code)
            .where(ImportRowError.job_id == job_id)
            .order_by(ImportRowError.row, ImportRowError.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def _progress(imports: ImportPlatform, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = imports.client.get(f"/v1/jobs/{job_id}").json()
    return job


def test_killed_workers_leave_exactly_a_clean_runs_table_and_counts(imports):
    data = products_csv(ROWS, bad_every=997, repeat_every=1_499)

    clean_imports(imports.sessions)
    clean = imports.run(data)
    assert clean["status"] == "succeeded", clean
    assert clean["attempt"] == 1
    reference = _digest(imports)
    assert reference[0] == clean["result"]["inserted"]
    reference_errors = _errors(imports, clean["id"])
    assert len(reference_errors) == clean["result"]["rejected"] > 0

    clean_imports(imports.sessions)
    job_id = imports.submit(data).json()["id"]
    worker = imports.platform.processes[1]
    killed_at: list[int] = []
    for share in KILL_AT:
        deadline = time.monotonic() + 60
        while (job := _progress(imports, job_id))["progress"]["done"] < share * ROWS:
            assert job["status"] in ("queued", "running"), job
            assert time.monotonic() < deadline, job
            time.sleep(0.01)
        worker.kill_group()
        killed = time.monotonic()
        worker.popen.wait(10)
        killed_at.append(job["progress"]["done"])
        worker = imports.platform.start_worker()
        attempt = job["attempt"] + 1
        while (job := _progress(imports, job_id))["attempt"] < attempt:
            time.sleep(0.05)
        assert job["status"] == "running", job
        # Lease + reaper interval, plus the time a fresh worker takes to start (~2 s here).
        bound = imports.settings.reaper_bound_seconds
        assert time.monotonic() - killed < bound, (
            f"running again after {time.monotonic() - killed:.1f}s"
        )

    job = imports.wait(job_id, timeout=60)
    assert job["status"] == "succeeded", job
    assert all(0 < done < ROWS for done in killed_at), killed_at
    assert job["attempt"] == len(KILL_AT) + 1  # each kill cost one attempt, nothing more
    assert {k: job["result"][k] for k in COUNTS} == {k: clean["result"][k] for k in COUNTS}
    assert _digest(imports) == reference
    assert _errors(imports, job_id) == reference_errors  # none lost, none twice
