"""A scheduled import end to end: files dropped in the inbox are imported by a real worker,
each exactly once, through the products importer; firings without new files are recorded
as skipped; imported files end up under processed/."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from core import db
from core.api_keys import Role
from core.models import Product
from core.settings import Settings
from tests import services
from tests.e2e.conftest import wait_for_job
from tests.product_csv import write_products_csv

TICK = {"CONVEYOR_SCHEDULE_TICK_INTERVAL": "0.2"}


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "inbox").mkdir()
    return {"import_inbox": tmp_path / "inbox"}


def firings(client: httpx.Client, schedule_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/schedules/{schedule_id}/firings")
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def wait_created(client: httpx.Client, schedule_id: str, count: int) -> list[dict[str, Any]]:
    def created() -> list[dict[str, Any]]:
        return [f for f in firings(client, schedule_id) if f["status"] == "created"][:count]

    found = services.wait_until(
        lambda: len(created()) == count and created(), timeout=30, message="a created firing"
    )
    assert isinstance(found, list)
    return found


def test_inbox_files_are_imported_once_each(
    platform: services.Platform, sessions: db.Sessions, settings: Settings
) -> None:
    assert settings.import_inbox is not None
    inbox = settings.import_inbox
    platform.start_api(TICK)
    platform.start_worker(queues="imports")
    key = services.new_api_key(sessions, settings, Role.operator, "ops")
    write_products_csv(inbox / "products-a.csv", 30)
    write_products_csv(inbox / "products-b.csv", 10)
    with httpx.Client(
        base_url=platform.api_url or "", headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        created = client.post(
            "/v1/schedules",
            json={
                "name": "products-inbox",
                "interval_seconds": 2,
                "job": {"kind": "import", "importer": "products", "inbox_pattern": "products-*"},
            },
        )
        assert created.status_code == 201, created.text
        schedule_id = created.json()["id"]

        (first,) = wait_created(client, schedule_id, 1)
        jobs = [wait_for_job(client, j, {"succeeded", "failed"}) for j in first["job_ids"]]
        assert [job["status"] for job in jobs] == ["succeeded", "succeeded"]
        assert {job["schedule_id"] for job in jobs} == {schedule_id}
        assert {job["fire_time"] for job in jobs} == {first["fire_time"]}
        assert sorted(job["result"]["rows_total"] for job in jobs) == [10, 30]
        with db.transaction(sessions) as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Product)) == 30

        time.sleep(3)  # a firing or more with nothing new
        assert "skipped_no_input" in {f["status"] for f in firings(client, schedule_id)}
        write_products_csv(inbox / "products-c.csv", 5)
        second = wait_created(client, schedule_id, 2)[0]
        assert len(second["job_ids"]) == 1
        job = wait_for_job(client, second["job_ids"][0], {"succeeded", "failed"})
        assert job["params"]["upload"]["filename"] == "products-c.csv"

    imported = sorted(p.name for p in (inbox / "processed").rglob("*") if p.is_file())
    assert imported == ["products-a.csv", "products-b.csv", "products-c.csv"]
    assert [p.name for p in inbox.iterdir() if p.is_file()] == []
