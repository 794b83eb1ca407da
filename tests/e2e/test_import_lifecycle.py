"""Import jobs through their lifecycle on real processes: re-import, insert mode, dry run,
error threshold, idempotent submit, the errors API and CSV, cancel and retry, concurrent
duplicate delivery, and the ``conveyor import`` command."""

from __future__ import annotations

import csv
import io
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from core import db
from core.api_keys import Role
from core.broker.breaker import RedisBreaker
from core.broker.publisher import JobMessage, JobPublisher
from core.models import ImportRowError, JobEvent
from tests import services
from tests.conftest import settings_env
from tests.e2e.import_support import (
    ImportPlatform,
    clean_imports,
    import_settings,
    running_import_platform,
)
from tests.product_csv import product_row, products_csv

pytestmark = pytest.mark.e2e

BATCH_ROWS = 500


@pytest.fixture(scope="module")
def imports(database_url, session_redis, engine, tmp_path_factory) -> Iterator[ImportPlatform]:
    tmp = tmp_path_factory.mktemp("import-lifecycle")
    settings = import_settings(
        database_url, session_redis, tmp / "storage", import_batch_rows=BATCH_ROWS
    )
    yield from running_import_platform(settings, engine, tmp / "logs", workers=2)


@pytest.fixture
def fresh(imports: ImportPlatform) -> ImportPlatform:
    clean_imports(imports.sessions)
    return imports


def _counts(job) -> tuple[int, int, int, int, int]:
    r = job["result"]
    return r["rows_total"], r["inserted"], r["updated"], r["unchanged"], r["rejected"]


def test_reimporting_a_file_updates_every_row_and_adds_none(fresh):
    data = products_csv(2_000, bad_every=100, repeat_every=51)
    first = fresh.run(data)
    assert first["status"] == "succeeded"
    rows, inserted, updated, _, rejected = _counts(first)
    assert rows == 2_000
    assert rejected == 20
    assert updated == 39  # each repeated sku overwrote an earlier row of the file
    assert inserted == rows - rejected - updated
    before = fresh.products()

    again = fresh.run(data)
    assert _counts(again) == (2_000, 0, 1_980, 1_980 - 39, 20)
    assert fresh.products() == before  # nothing rewritten: imported_at unchanged too
    assert len(fresh.errors(again["id"])) == 20


def test_insert_mode_rejects_existing_keys(fresh):
    fresh.run(b"sku,name\nA,a\n")
    job = fresh.run(b"sku,name\nA,again\nB,b\nB,twice\n", mode="insert")
    assert job["status"] == "succeeded"
    assert _counts(job)[:3] == (3, 1, 0)
    assert job["result"]["rejected"] == 2
    assert fresh.errors(job["id"]) == [(2, "sku", "duplicate_key"), (4, "sku", "duplicate_key")]
    assert {sku: p["name"] for sku, p in fresh.products().items()} == {"A": "a", "B": "b"}


def test_dry_run_writes_nothing_but_reports_rejections(fresh):
    fresh.run(b"sku,name\nA,a\n")
    job = fresh.run(b"sku,name,price\nA,x,1\nB,b,-1\nC,c,2\n", dry_run="true", mode="insert")
    assert job["status"] == "succeeded"
    result = job["result"]
    assert result["dry_run"] is True
    assert (result["rows_total"], result["valid"], result["inserted"], result["rejected"]) == (
        3,
        1,
        0,
        2,
    )
    assert fresh.errors(job["id"]) == [(2, "sku", "duplicate_key"), (3, "price", "out_of_range")]
    assert set(fresh.products()) == {"A"}


def test_error_threshold_fails_the_import_and_reports_progress(fresh):
    data = products_csv(3_000, bad_every=10)  # one row in ten is bad: 50 per batch of 500
    job = fresh.run(data, error_threshold="120")
    assert job["status"] == "failed"
    assert job["error"]["code"] == "error_threshold_exceeded"
    result = job["result"]
    # Batches of 500 rows hold 50 bad rows each: the third batch crosses 120.
    assert (result["rows_total"], result["rejected"]) == (1_500, 150)
    assert len(fresh.products()) == 1_350
    fraction = fresh.run(data, error_threshold="5%")
    assert fraction["error"]["code"] == "error_threshold_exceeded"
    assert fresh.run(data, error_threshold="10%")["status"] == "succeeded"


def test_idempotency_key(fresh):
    key = str(uuid.uuid4())
    headers = {"Idempotency-Key": key}
    files = {"file": ("a.csv", b"sku,name\nI1,a\n")}
    first = fresh.client.post(
        "/v1/imports", data={"importer": "products"}, files=files, headers=headers
    )
    again = fresh.client.post(
        "/v1/imports", data={"importer": "products"}, files=files, headers=headers
    )
    other = fresh.client.post(
        "/v1/imports",
        data={"importer": "products"},
        files={"file": ("a.csv", b"sku,name\nI2,b\n")},
        headers=headers,
    )
    assert (first.status_code, again.status_code, other.status_code) == (202, 200, 409)
    assert again.json()["id"] == first.json()["id"]
    fresh.wait(first.json()["id"])


def test_bad_requests_are_422_problems(fresh):
    cases = [
        ({"importer": "nope"}, "importer"),
        ({"importer": "products", "mode": "merge"}, "mode"),
        ({"importer": "products", "error_threshold": "lots"}, "error_threshold"),
        ({"importer": "products", "encoding": "utf-16"}, "encoding"),
        ({"importer": "products", "delimiter": "ab"}, "delimiter"),
        ({"importer": "products", "colour": "red"}, "colour"),
    ]
    for form, field in cases:
        response = fresh.client.post("/v1/imports", data=form, files={"file": ("a.csv", b"x")})
        assert response.status_code == 422, (form, response.text)
        assert field in response.text
    no_file = fresh.client.post("/v1/imports", data={"importer": "products"}, files={})
    assert no_file.status_code == 422
    not_multipart = fresh.client.post("/v1/imports", json={"importer": "products"})
    assert not_multipart.status_code == 422


def test_importers_are_listed(fresh):
    body = fresh.client.get("/v1/importers").json()
    products = next(item for item in body["items"] if item["name"] == "products")
    assert products["key"] == ["sku"]
    columns = {column["name"]: column for column in products["columns"]}
    assert columns["sku"]["required"]
    assert columns["name"]["required"]
    assert columns["price"] == {
        **columns["price"],
        "type": "decimal",
        "required": False,
        "min": 0.0,
        "decimal_places": 2,
    }


def test_errors_pages_csv_download_and_visibility(fresh):
    data = b"sku,name,price\nE1,=HYPERLINK(1),-1\nE2,ok,1\nE3,,x\n-E4,b,-2\n"
    job = fresh.run(data)
    assert fresh.errors(job["id"]) == [
        (2, "price", "out_of_range"),
        (4, "name", "required"),
        (4, "price", "invalid_value"),
        (5, "price", "out_of_range"),
    ]
    download = fresh.client.get(f"/v1/jobs/{job['id']}/errors", params={"format": "csv"})
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(download.text))) == [
        ["sku", "name", "price", "error_row", "error_column", "error_message"],
        [
            "E1",
            "'=HYPERLINK(1)",
            "'-1",
            "2",
            "price",
            "price: Input should be greater than or equal to 0",
        ],
        [
            "E3",
            "",
            "x",
            "4",
            "name; price",
            "name: name is required.; price: Input should be a valid decimal",
        ],
        ["'-E4", "b", "'-2", "5", "price", "price: Input should be greater than or equal to 0"],
    ]
    stranger = services.new_api_key(fresh.sessions, fresh.settings, Role.submitter)
    denied = fresh.client.get(
        f"/v1/jobs/{job['id']}/errors", headers={"Authorization": f"Bearer {stranger}"}
    )
    assert denied.status_code == 404
    bad_cursor = fresh.client.get(f"/v1/jobs/{job['id']}/errors", params={"cursor": "zz"})
    assert bad_cursor.status_code == 422


def test_cancel_keeps_committed_batches_and_retry_finishes_exactly(fresh):
    rows = 60_000
    data = products_csv(rows, bad_every=1_000)
    response = fresh.submit(data)
    job_id = response.json()["id"]
    deadline = time.monotonic() + 60
    while (job := fresh.client.get(f"/v1/jobs/{job_id}").json())["progress"]["done"] < 5_000:
        assert job["status"] in ("queued", "running"), job
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
    assert fresh.client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    cancelled = fresh.wait(job_id)
    assert cancelled["status"] == "cancelled", cancelled
    result = cancelled["result"]
    assert 5_000 <= result["rows_total"] < rows
    assert result["rows_total"] % BATCH_ROWS == 0  # whole batches only
    assert len(fresh.products()) == result["inserted"]
    assert len(fresh.errors(job_id)) == result["rejected"]

    assert fresh.client.post(f"/v1/jobs/{job_id}/retry").status_code == 202
    done = fresh.wait(job_id)
    assert done["status"] == "succeeded", done
    total, inserted, updated, _, rejected = _counts(done)
    assert (total, rejected) == (rows, rows // 1_000)
    assert inserted == rows - rejected - result["inserted"]  # the retry starts from row 2
    assert updated == result["inserted"]
    assert len(fresh.products()) == rows - rejected
    assert len(fresh.errors(job_id)) == rejected  # the first run's errors were replaced


def test_concurrent_duplicate_delivery_runs_the_import_once(fresh):
    wrinkles = {"bad_every": 500, "repeat_every": 97}
    response = fresh.submit(products_csv(20_000, **wrinkles))
    job_id = response.json()["id"]
    # Two more deliveries of the same task, to two workers, at once.
    publisher = JobPublisher.from_settings(
        fresh.settings, RedisBreaker.from_settings(fresh.settings)
    )
    try:
        message = JobMessage("import", uuid.UUID(job_id), None, 60)
        assert publisher.publish(message)
        assert publisher.publish(message)
    finally:
        publisher.close()
    job = fresh.wait(job_id)
    assert job["status"] == "succeeded"
    assert job["attempt"] == 1
    with db.transaction(fresh.sessions) as session:
        running = session.scalar(
            sa.select(sa.func.count()).where(
                JobEvent.job_id == job_id,
                JobEvent.type == "status",
                JobEvent.data["status"].astext == "running",
            )
        )
        errors = session.scalar(sa.select(sa.func.count()).where(ImportRowError.job_id == job_id))
    assert running == 1
    valid = [row for i in range(20_000) if (row := product_row(i, **wrinkles))[3] != "-1.00"]
    expected_inserted = len({row[0] for row in valid})
    assert _counts(job) == (
        20_000,
        expected_inserted,
        len(valid) - expected_inserted,
        job["result"]["unchanged"],
        40,
    )
    assert errors == 40
    assert len(fresh.products()) == expected_inserted


def test_cli_import_waits_and_prints_the_counts(fresh, tmp_path):
    path = tmp_path / "cli.csv"
    path.write_bytes(b"sku,name,price\nC1,a,1\nC2,b,-1\n")
    key = services.new_api_key(fresh.sessions, fresh.settings, Role.submitter)
    env = {
        **settings_env(fresh.settings),
        "CONVEYOR_API_URL": fresh.platform.api_url or "",
        "CONVEYOR_API_KEY": key,
    }
    done = subprocess.run(
        [
            str(services.VENV_BIN / "conveyor"),
            "import",
            str(path),
            "--importer",
            "products",
            "--wait",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Import succeeded." in done.stdout
    assert "2 total, 1 inserted, 0 updated (0 unchanged), 1 rejected" in done.stdout
    assert "/errors?format=csv" in done.stdout
    assert "rows" in done.stderr  # the progress line
    refused = subprocess.run(
        [str(services.VENV_BIN / "conveyor"), "import", str(path), "--importer", "nope"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1
    assert "invalid_request" in refused.stderr
