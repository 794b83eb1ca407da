"""Helpers for import e2e tests: one real API + worker shared by a whole module (starting
processes per case would dominate the run time), a client with a key, and submit/wait
helpers. Tables are cleaned per case with ``clean_imports``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
import sqlalchemy as sa

from core import db
from core.models import ImportRowError, Product
from core.settings import Settings
from tests import services
from tests.conftest import settings_env

TERMINAL = {"succeeded", "failed", "cancelled"}


def import_settings(
    database_url: str, redis_server: services.RedisServer, storage: Path, **overrides: Any
) -> Settings:
    """Settings for a module-long platform: DB 1 of the session's redis-server, so its
    workers never see the messages of function-scoped tests (which use DB 0)."""
    values: dict[str, Any] = {
        "env": "test",
        "database_url": database_url,
        "redis_url": redis_server.url.rsplit("/", 1)[0] + "/1",
        "storage_dir": storage,
        "lease_seconds": 3,
        "reaper_interval": 1,
        "reaper_bound_seconds": 10,
        "relay_interval": 0.5,
        "breaker_reset_timeout": 2,
        **overrides,
    }
    return Settings(**values)


@dataclass
class ImportPlatform:
    platform: services.Platform
    settings: Settings
    sessions: db.Sessions
    client: httpx.Client

    def submit(self, data: bytes, filename: str = "upload.csv", **form: Any) -> httpx.Response:
        fields = {"importer": "products", **{k: str(v) for k, v in form.items()}}
        return self.client.post(
            "/v1/imports", data=fields, files={"file": (filename, data, "text/csv")}
        )

    def run(self, data: bytes, *, timeout: float = 60, **form: Any) -> dict[str, Any]:
        response = self.submit(data, **form)
        assert response.status_code == 202, response.text
        return self.wait(response.json()["id"], timeout=timeout)

    def wait(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        return wait_terminal(self.client, job_id, timeout=timeout)

    def errors(self, job_id: str) -> list[tuple[int, str | None, str]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = self.client.get(f"/v1/jobs/{job_id}/errors", params=params)
            assert page.status_code == 200, page.text
            items += page.json()["items"]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                return [(item["row"], item["column"], item["code"]) for item in items]

    def products(self) -> dict[str, dict[str, Any]]:
        with db.transaction(self.sessions) as session:
            rows = session.scalars(sa.select(Product)).all()
            return {
                row.sku: {c.name: getattr(row, c.name) for c in Product.__table__.columns}
                for row in rows
            }


def wait_terminal(client: httpx.Client, job_id: str, *, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
        time.sleep(0.05)


def clean_imports(sessions: db.Sessions) -> None:
    with db.transaction(sessions) as session:
        session.execute(sa.delete(ImportRowError))
        session.execute(sa.text(f"TRUNCATE {Product.__tablename__}"))


def flush_redis(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def running_import_platform(
    settings: Settings, engine: sa.Engine, log_dir: Path, *, workers: int = 1
) -> Iterator[ImportPlatform]:
    """Start API + workers on ``settings``; yields once, stops everything after."""
    log_dir.mkdir(parents=True, exist_ok=True)
    flush_redis(settings.redis_url)
    sessions = db.make_sessionmaker(engine)
    key = services.new_api_key(sessions, settings)
    with services.platform(settings_env(settings), log_dir) as platform:
        platform.start_api()
        for _ in range(workers):
            platform.start_worker()
        assert platform.api_url is not None
        with httpx.Client(
            base_url=platform.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as client:
            yield ImportPlatform(platform, settings, sessions, client)
    flush_redis(settings.redis_url)
