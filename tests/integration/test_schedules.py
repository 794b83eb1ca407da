"""Schedules through the real API and the real tick on PostgreSQL, with the clock passed in
(``tick(now=...)``) so that hours of fire times play out at once: catch-up policies after
the tickers were stopped for several periods, overlap skip, inbox imports, refused paths."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from cli import schedules as cli_schedules
from cli.api_access import Api, ApiRefused
from core import db
from core.api_keys import Role
from core.lifecycle import commands
from core.models import Job, Schedule, ScheduleFiring
from core.schedules import inbox
from core.schedules.tick import tick
from core.settings import Settings
from tests import services
from tests.integration.api_support import assert_problem, bearer
from tests.product_csv import write_products_csv


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "inbox").mkdir()
    return {"import_inbox": tmp_path / "inbox"}


@pytest.fixture
def client(settings: Settings, sessions: db.Sessions) -> Iterator[TestClient]:
    # A tick interval far longer than any test: only the ticks a test calls run.
    quiet = settings.model_copy(update={"schedule_tick_interval": 3600.0})
    with TestClient(create_app(quiet)) as test_client:
        yield test_client


@pytest.fixture
def operator(sessions: db.Sessions, settings: Settings) -> dict[str, str]:
    return bearer(services.new_api_key(sessions, settings, Role.operator, "ops"))


def create(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    payload = {"name": f"s-{uuid.uuid4().hex[:8]}", "job": {"kind": "noop"}, **body}
    if "cron" not in payload and "interval_seconds" not in payload:
        payload["interval_seconds"] = 60
    response = client.post("/v1/schedules", json=payload, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def anchor(sessions: db.Sessions, schedule_id: str) -> datetime:
    with db.transaction(sessions) as session:
        row = session.get(Schedule, uuid.UUID(schedule_id))
        assert row is not None
        return row.anchor_at


def firings(client: TestClient, headers: dict[str, str], schedule_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/schedules/{schedule_id}/firings?limit=1000", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def jobs_of(sessions: db.Sessions, schedule_id: str) -> list[Job]:
    with db.transaction(sessions) as session:
        return list(
            session.scalars(
                sa.select(Job)
                .where(Job.schedule_id == uuid.UUID(schedule_id))
                .order_by(Job.fire_time)
            )
        )


def test_schedule_resource_shapes_and_lifecycle(
    client: TestClient, operator: dict[str, str], sessions: db.Sessions, settings: Settings
) -> None:
    body = create(
        client,
        operator,
        name="nightly",
        cron="30 2 * * *",
        timezone="Europe/Berlin",
        job={"kind": "sleep", "params": {"seconds": 1}},
        catch_up="latest",
    )
    assert {"id", "next_fire_at", "last_fired_at", "paused"} <= set(body)
    assert body["last_fired_at"] is None
    assert body["paused"] is False
    assert body["job"] == {"kind": "sleep", "params": {**body["job"]["params"], "seconds": 1.0}}
    assert datetime.fromisoformat(body["next_fire_at"]).astimezone().minute == 30
    sid = body["id"]
    assert [s["id"] for s in client.get("/v1/schedules", headers=operator).json()["items"]] == [sid]
    assert client.get(f"/v1/schedules/{sid}", headers=operator).json()["name"] == "nightly"

    changed = client.patch(f"/v1/schedules/{sid}", json={"interval_seconds": 10}, headers=operator)
    assert changed.status_code == 200, changed.text
    assert changed.json()["cron"] is None
    assert changed.json()["interval_seconds"] == 10
    assert client.post(f"/v1/schedules/{sid}/pause", headers=operator).json()["paused"] is True
    assert client.post(f"/v1/schedules/{sid}/resume", headers=operator).json()["paused"] is False

    assert client.delete(f"/v1/schedules/{sid}", headers=operator).status_code == 204
    assert_problem(client.get(f"/v1/schedules/{sid}", headers=operator), 404, "not_found")


def test_submitters_cannot_manage_schedules(
    client: TestClient, sessions: db.Sessions, settings: Settings
) -> None:
    alice = bearer(services.new_api_key(sessions, settings, Role.submitter, "alice"))
    response = client.post(
        "/v1/schedules",
        json={"name": "x", "interval_seconds": 10, "job": {"kind": "noop"}},
        headers=alice,
    )
    assert_problem(response, 403, "forbidden")
    assert_problem(client.get("/v1/schedules", headers=alice), 403, "forbidden")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"cron": "30 2 * * *", "interval_seconds": 10}, 422, "cron"),
        ({"cron": "61 * * * *"}, 422, "cron"),
        ({"interval_seconds": 0.1}, 422, "interval_seconds"),
        ({"interval_seconds": 10, "timezone": "Mars/Olympus"}, 422, "timezone"),
        (
            {"interval_seconds": 10, "job": {"kind": "sleep", "params": {}}},
            422,
            "job.params.seconds",
        ),
    ],
)
def test_invalid_schedules_are_refused_with_the_field(
    client: TestClient, operator: dict[str, str], body: dict[str, Any], status: int, field: str
) -> None:
    payload = {"name": "bad", "job": {"kind": "noop"}, **body}
    problem = assert_problem(
        client.post("/v1/schedules", json=payload, headers=operator), status, "invalid_request"
    )
    assert problem["where"] == {"field": field}


@pytest.mark.parametrize(
    "pattern",
    ["../products-*.csv", "/etc/passwd", "sub/products.csv", "..", ".claimed", "a\\b.csv", ""],
)
def test_inbox_patterns_outside_the_inbox_are_refused(
    client: TestClient, operator: dict[str, str], pattern: str
) -> None:
    job = {"kind": "import", "importer": "products", "inbox_pattern": pattern}
    response = client.post(
        "/v1/schedules", json={"name": "imp", "interval_seconds": 60, "job": job}, headers=operator
    )
    problem = assert_problem(response, 400, "bad_request")
    assert problem["where"] == {"field": "job.inbox_pattern"}


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"delimiter": "ab"}, "job.options.delimiter"),
        ({"encoding": "utf-16"}, "job.options.encoding"),
        ({"error_threshold": "lots"}, "job.options.error_threshold"),
        ({"mode": "merge"}, "job.options.mode"),
        ({"colour": "red"}, "job.options.colour"),
    ],
)
def test_import_options_are_checked_as_the_import_form_checks_them(
    client: TestClient, operator: dict[str, str], options: dict[str, Any], field: str
) -> None:
    job = {"kind": "import", "importer": "products", "inbox_pattern": "p-*.csv", "options": options}
    response = client.post(
        "/v1/schedules", json={"name": "imp", "interval_seconds": 60, "job": job}, headers=operator
    )
    problem = assert_problem(response, 422, "invalid_request")
    assert problem["where"] == {"field": field}
    assert problem["message"].startswith(f"{field}: ")


def test_import_options_are_stored_as_given_with_the_mode_resolved(
    client: TestClient, operator: dict[str, str]
) -> None:
    options = {"delimiter": "\t", "encoding": " ", "error_threshold": "5%"}
    job = {"kind": "import", "importer": "products", "inbox_pattern": "p-*.csv", "options": options}
    stored = create(client, operator, job=job)["job"]
    assert stored["options"] == {"mode": "upsert", "delimiter": "\t", "error_threshold": 0.05}


def test_catch_up_policies_after_the_tickers_were_stopped(
    client: TestClient, operator: dict[str, str], sessions: db.Sessions, settings: Settings
) -> None:
    ids = {
        policy: create(client, operator, catch_up=policy, overlap="allow")["id"]
        for policy in ("skip", "latest", "all")
    }
    # Nothing ticked for five periods and 40 s: fire times t0+60 ... t0+300 were missed.
    start = max(anchor(sessions, sid) for sid in ids.values())
    now = start + timedelta(seconds=5 * 60 + 40)
    tick(sessions, settings, now=now)
    statuses = {
        policy: [f["status"] for f in firings(client, operator, sid)] for policy, sid in ids.items()
    }
    assert statuses["skip"] == ["skipped_catch_up"] * 5
    assert statuses["latest"] == ["created"] + ["skipped_catch_up"] * 4
    assert statuses["all"] == ["created"] * 5
    assert [len(jobs_of(sessions, sid)) for sid in ids.values()] == [0, 1, 5]
    # The latest policy fired the most recent fire time; all of them carry it in the job.
    latest_job = jobs_of(sessions, ids["latest"])[0]
    assert latest_job.fire_time == datetime.fromisoformat(
        firings(client, operator, ids["latest"])[0]["fire_time"]
    )
    resource = client.get(f"/v1/jobs/{latest_job.id}", headers=operator).json()
    assert resource["schedule_id"] == ids["latest"]
    assert resource["fire_time"] is not None

    # Ticking again at the same instant decides nothing twice.
    again = tick(sessions, settings, now=now)
    assert again.schedules == 0
    # Back to normal: the next fire time, picked up 2 s late, fires under every policy.
    for sid in ids.values():
        schedule = client.get(f"/v1/schedules/{sid}", headers=operator).json()
        assert schedule["last_fired_at"] is not None
        next_fire = datetime.fromisoformat(schedule["next_fire_at"])
        assert next_fire > now
    tick(sessions, settings, now=start + timedelta(seconds=362))
    assert [firings(client, operator, sid)[0]["status"] for sid in ids.values()] == ["created"] * 3


def test_firings_are_paged_newest_first_by_cursor(
    client: TestClient, operator: dict[str, str], sessions: db.Sessions, settings: Settings
) -> None:
    sid = create(client, operator, catch_up="all", overlap="allow")["id"]
    tick(sessions, settings, now=anchor(sessions, sid) + timedelta(seconds=5 * 60 + 1))
    everything = [f["fire_time"] for f in firings(client, operator, sid)]
    assert len(everything) == 5
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"/v1/schedules/{sid}/firings", params=params, headers=operator).json()
        seen += [f["fire_time"] for f in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == everything
    bad = client.get(f"/v1/schedules/{sid}/firings?cursor=zz", headers=operator)
    assert assert_problem(bad, 422, "invalid_request")["where"] == {"query": "cursor"}


def test_overlap_skip_waits_for_the_previous_job(
    client: TestClient, operator: dict[str, str], sessions: db.Sessions, settings: Settings
) -> None:
    sid = create(client, operator, overlap="skip", catch_up="all")["id"]
    t0 = anchor(sessions, sid)
    tick(sessions, settings, now=t0 + timedelta(seconds=61))
    tick(sessions, settings, now=t0 + timedelta(seconds=121))  # the first job is still queued
    assert [f["status"] for f in firings(client, operator, sid)] == ["skipped_overlap", "created"]
    (first,) = jobs_of(sessions, sid)
    with db.transaction(sessions) as session:
        commands.request_cancel(session, job_id=first.id, principal=None)
    tick(sessions, settings, now=t0 + timedelta(seconds=181))
    assert next(f["status"] for f in firings(client, operator, sid)) == "created"
    assert len(jobs_of(sessions, sid)) == 2


def test_paused_schedule_does_not_fire_and_resumes_from_now(
    client: TestClient, operator: dict[str, str], sessions: db.Sessions, settings: Settings
) -> None:
    sid = create(client, operator, paused=True)["id"]
    t0 = anchor(sessions, sid)
    assert tick(sessions, settings, now=t0 + timedelta(hours=1)).schedules == 0
    # Paused for five hours: every fire time since fell due long ago.
    with db.transaction(sessions) as session:
        session.execute(
            sa.update(Schedule)
            .where(Schedule.id == uuid.UUID(sid))
            .values(
                anchor_at=Schedule.anchor_at - timedelta(hours=5),
                next_fire_at=Schedule.next_fire_at - timedelta(hours=5),
            )
        )
    resumed = client.post(f"/v1/schedules/{sid}/resume", headers=operator).json()
    with db.transaction(sessions) as session:
        database_now = session.scalar(sa.select(sa.func.now()))
    assert database_now is not None
    # Counted from the resume: nothing of the paused hours fires, is skipped or is recorded.
    assert datetime.fromisoformat(resumed["next_fire_at"]) > database_now
    assert tick(sessions, settings, now=database_now).schedules == 0
    assert firings(client, operator, sid) == []


def write_inbox_file(settings: Settings, name: str, rows: int) -> Path:
    assert settings.import_inbox is not None
    return write_products_csv(settings.import_inbox / name, rows)


def test_inbox_import_takes_new_files_once_and_records_an_empty_firing(
    client: TestClient, operator: dict[str, str], sessions: db.Sessions, settings: Settings
) -> None:
    assert settings.import_inbox is not None
    root = settings.import_inbox
    write_inbox_file(settings, "products-1.csv", 3)
    write_inbox_file(settings, "products-2.csv", 4)
    write_inbox_file(settings, "orders-1.csv", 2)  # another pattern: left alone
    outside = root.parent / "products-secret.csv"
    write_products_csv(outside, 1)
    os.symlink(outside, root / "products-link.csv")  # a symlink is never followed
    job = {"kind": "import", "importer": "products", "inbox_pattern": "products-*.csv"}
    sid = create(client, operator, job=job, catch_up="all", overlap="allow")["id"]
    t0 = anchor(sessions, sid)

    tick(sessions, settings, now=t0 + timedelta(seconds=61))
    (firing,) = firings(client, operator, sid)
    assert firing["status"] == "created"
    assert len(firing["job_ids"]) == 2
    assert firing["job_id"] == firing["job_ids"][0]
    jobs = jobs_of(sessions, sid)
    assert sorted(j.params["upload"]["filename"] for j in jobs) == [
        "products-1.csv",
        "products-2.csv",
    ]
    for j in jobs:
        assert (settings.storage_dir / j.params["upload"]["path"]).is_file()
        assert j.params["importer"] == "products"
        assert j.kind == "import"
    processed = root / inbox.PROCESSED / sid / inbox.stamp(jobs[0].fire_time or t0)
    assert sorted(p.name for p in processed.iterdir()) == ["products-1.csv", "products-2.csv"]
    assert sorted(p.name for p in root.iterdir() if p.is_file() or p.is_symlink()) == [
        "orders-1.csv",
        "products-link.csv",
    ]
    assert not any((root / inbox.CLAIMED).rglob("*.csv"))

    tick(sessions, settings, now=t0 + timedelta(seconds=121))
    assert [f["status"] for f in firings(client, operator, sid)] == ["skipped_no_input", "created"]
    assert len(jobs_of(sessions, sid)) == 2


def test_files_claimed_by_a_firing_that_crashed_are_imported_by_the_retry(
    client: TestClient, operator: dict[str, str], sessions: db.Sessions, settings: Settings
) -> None:
    assert settings.import_inbox is not None
    job = {"kind": "import", "importer": "products", "inbox_pattern": "products-*.csv"}
    sid = create(client, operator, job=job)["id"]
    t0 = anchor(sessions, sid)
    write_inbox_file(settings, "products-1.csv", 3)
    # A tick claimed the file for fire time t0+60, then died before its COMMIT.
    fire_time = t0 + timedelta(seconds=60)
    inbox.claim(settings.import_inbox, uuid.UUID(sid), fire_time, "products-*.csv", [])
    assert not (settings.import_inbox / "products-1.csv").exists()
    tick(sessions, settings, now=fire_time + timedelta(seconds=1))
    (firing,) = firings(client, operator, sid)
    assert firing["status"] == "created"
    assert len(firing["job_ids"]) == 1
    with db.transaction(sessions) as session:
        count = session.scalar(sa.select(sa.func.count()).select_from(ScheduleFiring))
    assert count == 1


def test_a_firing_that_cannot_make_its_job_is_recorded_and_blocks_nothing(
    client: TestClient, operator: dict[str, str], sessions: db.Sessions, settings: Settings
) -> None:
    job = {"kind": "sleep", "params": {"seconds": 1, "timeout_seconds": 50}}
    broken = create(client, operator, job=job, overlap="allow")["id"]
    healthy = create(client, operator, overlap="allow")["id"]
    start = max(anchor(sessions, broken), anchor(sessions, healthy))
    # The operator lowered the sleep limit below what the schedule asks for.
    strict = settings.model_copy(update={"time_limits": {**settings.time_limits, "sleep": 10.0}})
    for minute in (1, 2):
        tick(sessions, strict, now=start + timedelta(seconds=60 * minute + 1))
    failed = firings(client, operator, broken)
    assert [f["status"] for f in failed] == ["failed", "failed"]
    assert failed[0]["detail"]["code"] == "invalid_request"
    assert failed[0]["job_id"] is None
    assert [f["status"] for f in firings(client, operator, healthy)] == ["created", "created"]


def deployment(**limits: int) -> dict[str, Any]:
    params = {
        "source": {"project": "demo"},
        "playbook": "site.yml",
        "targets": [{"name": "web", "host": "10.0.0.5"}],
    }
    return {"kind": "deployment", "params": {**params, "limits": limits}}


def test_scheduled_deployments_get_the_operators_current_limits(
    client: TestClient, operator: dict[str, str], sessions: db.Sessions, settings: Settings
) -> None:
    asked = create(client, operator, job=deployment(memory_mb=3000), overlap="allow")
    defaulted = create(client, operator, job=deployment(), overlap="allow")
    # Stored as asked: what it left out is not frozen at the defaults of creation time.
    assert asked["job"]["params"]["limits"]["memory_mb"] == 3000
    assert defaulted["job"]["params"]["limits"]["memory_mb"] is None
    start = max(anchor(sessions, asked["id"]), anchor(sessions, defaulted["id"]))
    tick(sessions, settings, now=start + timedelta(seconds=61))
    (first,) = jobs_of(sessions, asked["id"])
    assert first.params["limits"]["memory_mb"] == 3000

    # The operator lowers the maxima (and with them the defaults) after the schedules exist.
    lowered = settings.model_copy(
        update={
            "deploy_max_memory_mb": 2048,
            "deploy_memory_mb": 512,
            "time_limits": {**settings.time_limits, "deployment": 900.0},
        }
    )
    tick(sessions, lowered, now=start + timedelta(seconds=121))
    refused = firings(client, operator, asked["id"])[0]
    assert refused["status"] == "failed"
    assert refused["detail"] == {
        "code": "invalid_request",
        "message": "limits.memory_mb may be at most 2048 (operator limit).",
    }
    assert len(jobs_of(sessions, asked["id"])) == 1
    latest = jobs_of(sessions, defaulted["id"])[-1]
    assert latest.params["limits"]["memory_mb"] == 512
    assert latest.params["limits"]["timeout_seconds"] == 900
    assert latest.time_limit_seconds == 900


def test_inbox_files_of_a_failed_firing_are_imported_by_the_next(
    client: TestClient, operator: dict[str, str], sessions: db.Sessions, settings: Settings
) -> None:
    assert settings.import_inbox is not None
    job = {"kind": "import", "importer": "products", "inbox_pattern": "products-*.csv"}
    sid = create(client, operator, job=job)["id"]
    t0 = anchor(sessions, sid)
    write_inbox_file(settings, "products-1.csv", 3)
    blocked = settings.storage_dir.parent / "not-a-directory"
    blocked.write_text("upload storage cannot be created here")
    tick(
        sessions,
        settings.model_copy(update={"storage_dir": blocked}),
        now=t0 + timedelta(seconds=61),
    )
    assert [f["status"] for f in firings(client, operator, sid)] == ["failed"]
    tick(sessions, settings, now=t0 + timedelta(seconds=121))
    statuses = [(f["status"], len(f["job_ids"])) for f in firings(client, operator, sid)]
    assert statuses == [("created", 1), ("failed", 0)]
    (imported,) = jobs_of(sessions, sid)
    assert imported.params["upload"]["filename"] == "products-1.csv"


def test_processes_without_an_inbox_leave_import_schedules_alone(
    client: TestClient, operator: dict[str, str], sessions: db.Sessions, settings: Settings
) -> None:
    job = {"kind": "import", "importer": "products", "inbox_pattern": "products-*.csv"}
    imports = create(client, operator, job=job)["id"]
    noop = create(client, operator)["id"]
    now = max(anchor(sessions, imports), anchor(sessions, noop)) + timedelta(seconds=61)
    tick(sessions, settings.model_copy(update={"import_inbox": None}), now=now)
    assert firings(client, operator, imports) == []
    assert [f["status"] for f in firings(client, operator, noop)] == ["created"]
    tick(sessions, settings, now=now)
    assert [f["status"] for f in firings(client, operator, imports)] == ["skipped_no_input"]


def test_a_short_schedule_picked_up_a_tick_late_is_not_missed(
    client: TestClient, operator: dict[str, str], sessions: db.Sessions, settings: Settings
) -> None:
    sid = create(client, operator, interval_seconds=1, catch_up="skip", overlap="allow")["id"]
    t0 = anchor(sessions, sid)
    tick(sessions, settings, now=t0 + timedelta(seconds=1.9))  # 0.9 s late: on time
    # Nothing ticked for 7.6 s: t0+2 ... t0+8 were missed; t0+9, due 0.5 s ago, fires.
    tick(sessions, settings, now=t0 + timedelta(seconds=9.5))
    statuses = [f["status"] for f in firings(client, operator, sid)]  # newest first
    assert statuses == ["created", *["skipped_catch_up"] * 7, "created"]


class InProcessApi(Api):
    """The command line's API client, talking to the in-process app; records its calls."""

    def __init__(self, client: TestClient, headers: dict[str, str]) -> None:
        self.url = str(client.base_url)
        self.client = client
        self.headers = headers
        self.paths: list[str] = []

    def call(self, method: str, path: str, body: Any = None) -> Any:
        self.paths.append(path)
        self.client.headers.update(self.headers)
        return super().call(method, path, body)


def test_a_schedule_is_found_by_name(client: TestClient, operator: dict[str, str]) -> None:
    ids = {name: create(client, operator, name=name)["id"] for name in ("alpha", "a.b", "beta")}
    found = client.get("/v1/schedules", params={"name": "a.b"}, headers=operator).json()
    assert [s["id"] for s in found["items"]] == [ids["a.b"]]
    assert client.get("/v1/schedules?name=gamma", headers=operator).json()["items"] == []
    # `conveyor schedules … NAME` asks for that name, not for a page of every schedule.
    api = InProcessApi(client, operator)
    assert cli_schedules.resolve(api, "beta") == ids["beta"]
    assert api.paths == ["/v1/schedules?name=beta"]
    assert cli_schedules.resolve(api, ids["alpha"]) == ids["alpha"]  # an id needs no call
    assert len(api.paths) == 1
    with pytest.raises(ApiRefused, match="not_found: no schedule named 'gamma'"):
        cli_schedules.resolve(api, "gamma")


def test_schedule_names_are_unique(client: TestClient, operator: dict[str, str]) -> None:
    create(client, operator, name="one")
    other = create(client, operator, name="two")["id"]
    again = client.post(
        "/v1/schedules",
        json={"name": "one", "interval_seconds": 5, "job": {"kind": "noop"}},
        headers=operator,
    )
    assert assert_problem(again, 409, "schedule_name_taken")["where"] == {"field": "name"}
    # The unique index refuses the rename; nothing of the request is applied.
    renamed = client.patch(
        f"/v1/schedules/{other}", json={"name": "one", "interval_seconds": 7}, headers=operator
    )
    problem = assert_problem(renamed, 409, "schedule_name_taken")
    assert problem["where"] == {"field": "name"}
    assert "'one'" in problem["message"]
    unchanged = client.get(f"/v1/schedules/{other}", headers=operator).json()
    assert (unchanged["name"], unchanged["interval_seconds"]) == ("two", 60)
