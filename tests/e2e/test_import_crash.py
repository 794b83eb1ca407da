"""Crash and replay: the worker running a 100,000-row import is SIGKILLed (its whole process
group) three times at different points, with no beat running; each time the reaper in the
API process puts the job back within the recovery bound and a fresh worker takes over. The
final table and the counts must equal a clean run's.

Run for the built-in ``products`` importer and for ``catalogue``, declared by the test: its
table is created by the first attempt, and its unique ``name`` goes through the staged
unique checks on every re-imported batch."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from core import db
from core.models import ImportRowError, Job
from core.settings import BUILTIN_IMPORTERS_DIR
from tests.e2e.import_support import (
    ImportPlatform,
    clean_imports,
    import_settings,
    running_import_platform,
)
from tests.product_csv import products_csv

pytestmark = [pytest.mark.e2e, pytest.mark.slow(160)]

ROWS = 100_000
BATCH_ROWS = 1_000
KILL_AT = (0.15, 0.45, 0.75)  # share of rows committed when the worker is killed
COUNTS = ("rows_total", "valid", "inserted", "updated", "unchanged", "rejected")
CATALOGUE = {
    "table": "catalogue",
    "roles": ["submitter"],
    "trimWhitespace": True,
    "schema": {
        "fields": [
            {"name": "sku", "constraints": {"required": True, "maxLength": 64}},
            {"name": "name", "constraints": {"required": True, "unique": True}},
            {"name": "description"},
            {"name": "price", "type": "number", "constraints": {"minimum": 0}},
            {"name": "quantity", "type": "integer"},
            {
                "name": "category",
                "constraints": {"enum": ["tools", "garden", "kitchen", "toys", "books", "office"]},
            },
            {"name": "updated_at", "type": "datetime"},
        ],
        "primaryKey": ["sku"],
    },
}


def _table_digest(table: str) -> sa.TextClause:
    """Every column, in a stable text form, hashed in key order: equal hashes = equal tables."""
    return sa.text(
        "SELECT count(*), md5(string_agg(concat_ws('|', sku, name, description, "
        "price::text, quantity::text, category, extract(epoch FROM updated_at)::text), "
        f"E'\\n' ORDER BY sku)) FROM {table}"
    )


@pytest.fixture(scope="module")
def imports(database_url, session_redis, engine, tmp_path_factory) -> Iterator[ImportPlatform]:
    tmp = tmp_path_factory.mktemp("import-crash")
    importers = tmp / "importers"
    importers.mkdir()
    shutil.copy(BUILTIN_IMPORTERS_DIR / "products.yaml", importers)
    (importers / "catalogue.yaml").write_text(yaml.safe_dump(CATALOGUE))
    settings = import_settings(
        database_url,
        session_redis,
        tmp / "storage",
        import_batch_rows=BATCH_ROWS,
        importers_dir=importers,
    )
    yield from running_import_platform(settings, engine, tmp / "logs")


def _digest(imports: ImportPlatform, table: str) -> tuple[int, str]:
    with db.transaction(imports.sessions) as session:
        count, digest = session.execute(_table_digest(table)).one()
    return int(count), str(digest)


def _clean(imports: ImportPlatform, importer: str) -> None:
    clean_imports(imports.sessions)
    if importer == "catalogue":  # created again by the import, from its declaration
        with db.transaction(imports.sessions) as session:
            session.execute(sa.text("DROP TABLE IF EXISTS catalogue"))


def _errors(imports: ImportPlatform, job_id: str) -> list[tuple[int, str | None, str]]:
    with db.transaction(imports.sessions) as session:
        rows = session.execute(
            sa.select(ImportRowError.row, ImportRowError.column, ImportRowError.code)
            .where(ImportRowError.job_id == job_id)
            .order_by(ImportRowError.row, ImportRowError.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def _lease_owner(imports: ImportPlatform, job_id: str) -> str | None:
    with db.transaction(imports.sessions) as session:
        return session.scalar(sa.select(Job.lease_owner).where(Job.id == job_id))


def _progress(imports: ImportPlatform, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = imports.client.get(f"/v1/jobs/{job_id}").json()
    return job


@pytest.mark.parametrize("importer", ["products", "catalogue"])
def test_killed_workers_leave_exactly_a_clean_runs_table_and_counts(imports, importer):
    data = products_csv(ROWS, bad_every=997, repeat_every=1_499)
    table = importer

    _clean(imports, importer)
    clean = imports.run(data, importer=importer)
    assert clean["status"] == "succeeded", clean
    assert clean["attempt"] == 1
    reference = _digest(imports, table)
    assert reference[0] == clean["result"]["inserted"]
    reference_errors = _errors(imports, clean["id"])
    assert len(reference_errors) == clean["result"]["rejected"] > 0

    _clean(imports, importer)
    # A spare worker per kill, up before the job starts: what is measured is recovery (lease
    # + reaper), not how long a worker takes to start on a busy machine.
    for _ in KILL_AT:
        imports.platform.start_worker()
    job_id = imports.submit(data, importer=importer).json()["id"]
    killed_at: list[int] = []
    for share in KILL_AT:
        deadline = time.monotonic() + 60
        while (job := _progress(imports, job_id))["progress"]["done"] < share * ROWS:
            assert job["status"] in ("queued", "running"), job
            assert time.monotonic() < deadline, job
            time.sleep(0.01)
        owner = _lease_owner(imports, job_id)
        worker = next(p for p in imports.platform.processes if p.holds(owner))
        worker.kill_group()
        killed = time.monotonic()
        worker.popen.wait(10)
        killed_at.append(job["progress"]["done"])
        attempt = job["attempt"] + 1
        while (job := _progress(imports, job_id))["attempt"] < attempt:
            assert job["status"] in ("queued", "running"), job
            assert time.monotonic() - killed < 60, job
            time.sleep(0.05)
        assert job["status"] == "running", job
        recovered = time.monotonic() - killed
        assert recovered < imports.settings.reaper_bound_seconds, f"back after {recovered:.1f}s"

    job = imports.wait(job_id, timeout=60)
    assert job["status"] == "succeeded", job
    assert all(0 < done < ROWS for done in killed_at), killed_at
    assert job["attempt"] == len(KILL_AT) + 1  # each kill cost one attempt, nothing more
    assert {k: job["result"][k] for k in COUNTS} == {k: clean["result"][k] for k in COUNTS}
    assert _digest(imports, table) == reference
    assert _errors(imports, job_id) == reference_errors  # none lost, none twice
