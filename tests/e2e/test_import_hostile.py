"""Hostile uploads against the real API and worker: a 1 GiB single-line file fails fast and
keeps the worker's memory flat; too many columns; clipped messages; truncated multipart
bodies are refused (400) and leave nothing behind; refused forms leave no file; the
per-principal storage quota answers 413."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from core import db
from tests import services
from tests.conftest import settings_env
from tests.e2e.import_support import ImportPlatform, import_settings, running_import_platform

pytestmark = pytest.mark.e2e

GIB = 1 << 30
RECORD_CAP = 8 << 20


@pytest.fixture(scope="module")
def imports(database_url, session_redis, engine, tmp_path_factory) -> Iterator[ImportPlatform]:
    tmp = tmp_path_factory.mktemp("import-hostile")
    settings = import_settings(
        database_url,
        session_redis,
        tmp / "storage",
        max_upload_bytes=GIB + (1 << 20),
        import_max_record_bytes=RECORD_CAP,
        import_max_columns=50,
    )
    yield from running_import_platform(settings, engine, tmp / "logs")


def _stored_files(storage: Path) -> list[Path]:
    return sorted(p for p in (storage / "uploads").rglob("*") if p.is_file())


def _pool_child(worker: services.Process) -> int:
    """The pid of the prefork pool process of a --concurrency 1 worker."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == worker.popen.pid:
                return int(entry.name)
    raise AssertionError("no pool process")


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_one_gib_single_line_file_fails_fast_and_memory_stays_flat(imports, tmp_path):
    worker = next(p for p in imports.platform.processes if p.name == "worker")
    pool = _pool_child(worker)
    before = _peak_rss_kb(pool)
    path = tmp_path / "one-line.csv"
    block = b"x" * (1 << 20)
    with path.open("wb") as file:
        for _ in range(1024):
            file.write(block)
    with path.open("rb") as file:
        response = imports.client.post(
            "/v1/imports",
            data={"importer": "products"},
            files={"file": ("one-line.csv", file, "text/csv")},
            timeout=300,
        )
    path.unlink()
    assert response.status_code == 202, response.text
    job = imports.wait(response.json()["id"], timeout=120)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "record_too_large"
    assert f"{RECORD_CAP:,} bytes" in job["error"]["message"]
    started = job["started_at"].replace("Z", "+00:00")
    finished = job["finished_at"].replace("Z", "+00:00")
    took = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    assert took < 20, took  # the header read stops at the cap: the file is never read whole
    grown_mb = (_peak_rss_kb(pool) - before) / 1024
    assert grown_mb < 8 * RECORD_CAP / (1 << 20), grown_mb  # a few copies of one capped line


def test_a_header_with_too_many_columns_fails(imports):
    header = ",".join(f"column_{i}" for i in range(51)).encode()
    job = imports.run(header + b"\n" + b"," * 50 + b"\n")
    assert job["status"] == "failed"
    assert job["error"]["code"] == "too_many_columns"


def test_messages_about_a_hostile_header_are_clipped(imports):
    header = ",".join(f"{'n' * 200}{i}" for i in range(40)).encode()
    job = imports.run(b"sku,name," + header + b"\nA,b," + b"," * 39 + b"\n")
    assert job["status"] == "failed"
    assert job["error"]["code"] == "unknown_header"
    assert len(job["error"]["message"]) <= 501
    assert job["error"]["message"].endswith("…")
    assert len(job["result"]["error_where"]["columns"]) == 20


def test_rejected_rows_store_clipped_messages_and_raw_cells(imports):
    job = imports.run(b"sku,name,description\nA,b," + b"d" * 20_000 + b"\n")
    assert job["status"] == "succeeded"
    [error] = imports.client.get(f"/v1/jobs/{job['id']}/errors").json()["items"]
    assert error["code"] == "too_long"
    assert len(error["value"]) == 1_001  # VALUE_MAX_CHARS and the ellipsis
    download = imports.client.get(f"/v1/jobs/{job['id']}/errors", params={"format": "csv"})
    assert len(download.content) < 12_000  # the stored raw cell is clipped to 10,000


def _body(boundary: bytes, csv_bytes: bytes, *, closed: bool) -> bytes:
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="importer"\r\n\r\n'
        b"products\r\n--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
        b'filename="x.csv"\r\n\r\n' + csv_bytes
    )
    return body + (b"\r\n--" + boundary + b"--\r\n" if closed else b"")


def test_a_truncated_multipart_body_is_a_400_and_leaves_nothing(imports):
    storage = imports.settings.storage_dir
    before = _stored_files(storage)
    data = b"sku,name\nTRUNC-1,a\nTRUNC-2,b\n"
    headers = {"Content-Type": "multipart/form-data; boundary=b0undary"}
    for body in (
        _body(b"b0undary", data, closed=False),  # no closing boundary at all
        _body(b"b0undary", data, closed=False) + b"\r\n--b0und",  # cut inside it
    ):
        response = imports.client.post("/v1/imports", content=body, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "bad_request"
    assert _stored_files(storage) == before
    whole = imports.client.post(
        "/v1/imports", content=_body(b"b0undary", data, closed=True), headers=headers
    )
    assert whole.status_code == 202, whole.text


def test_refused_forms_leave_no_file_behind(imports):
    storage = imports.settings.storage_dir
    before = _stored_files(storage)
    for form in ({"importer": "nope"}, {"importer": "products", "mode": "merge"}):
        data = f"sku,name\nREFUSED-{form},x\n".encode()
        response = imports.client.post("/v1/imports", data=form, files={"file": ("x.csv", data)})
        assert response.status_code in (404, 422), response.text
    assert _stored_files(storage) == before


def test_the_storage_quota_answers_413(database_url, session_redis, engine, tmp_path):
    settings = import_settings(
        database_url, session_redis, tmp_path / "storage", upload_quota_bytes=3_000
    )
    key = services.new_api_key(db.make_sessionmaker(engine), settings)
    other = services.new_api_key(db.make_sessionmaker(engine), settings)
    first = b"sku,name\n" + b"Q,quota\n" * 200  # 1,609 bytes
    second = b"sku,name\n" + b"R,quota\n" * 200
    with services.platform(settings_env(settings), tmp_path) as platform:
        platform.start_api()
        post = _poster(platform, key)
        assert post(first).status_code == 202
        assert post(first).status_code in (200, 202)  # the same bytes are stored once
        refused = post(second)
        streamed = httpx.post(  # no Content-Length: refused once received
            f"{platform.api_url}/v1/imports",
            content=iter([_body(b"q", second, closed=True)]),
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "multipart/form-data; boundary=q",
            },
        )
        assert _poster(platform, other)(second).status_code == 202  # quotas are per key
    for response in (refused, streamed):
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "storage_quota_exceeded"
        assert "3,000 bytes" in response.json()["message"]
    stored = _stored_files(tmp_path / "storage")
    assert len(stored) == 2  # the first upload and the other key's; nothing of the refused
    assert all(p.parent.parent.name == "sha256" for p in stored)


def _poster(platform: services.Platform, key: str):
    def post(data: bytes) -> httpx.Response:
        return httpx.post(
            f"{platform.api_url}/v1/imports",
            data={"importer": "products"},
            files={"file": ("x.csv", data)},
            headers={"Authorization": f"Bearer {key}"},
        )

    return post
