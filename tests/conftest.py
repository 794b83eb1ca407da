"""Shared fixtures: one migrated PostgreSQL database per test session (tables truncated before
each test that uses it), a redis-server of the session's own (random port, flushed per test;
the machine's Redis is never touched), more private redis-servers on demand, and the
platform's processes for e2e tests. Under pytest-xdist every worker is its own session, so
parallel workers never share a database or a Redis. Missing services fail loudly (never skip)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from core import db
from core.settings import Settings
from tests import services


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = services.unique_name("conveyor_test")
    yield services.create_migrated_database(name)
    services.drop_database(name)


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = db.make_engine(Settings(env="test", database_url=database_url))
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: sa.Engine) -> db.Sessions:
    """A sessionmaker on a database whose tables were emptied for this test."""
    tables = ", ".join(t.name for t in db.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return db.make_sessionmaker(engine)


@pytest.fixture(scope="session")
def session_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.RedisServer]:
    """This session's own redis-server; tests that stop Redis use ``private_redis``."""
    server = services.RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(session_redis: services.RedisServer) -> Iterator[str]:
    """DB 0 of the session's redis-server, flushed around each test."""
    client = redis.Redis.from_url(session_redis.url)
    client.flushall()
    yield session_redis.url
    client.flushall()
    client.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[services.RedisServer]:
    """A redis-server of this test's own, which the test may stop, pause or restart."""
    server = services.RedisServer(tmp_path)
    server.start()
    yield server
    server.resume() if server.process else None
    server.stop()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Extra settings for one test: ``@pytest.mark.parametrize("settings_overrides", [{...}])``."""
    return {}


@pytest.fixture
def settings(
    database_url: str, redis_url: str, tmp_path: Path, settings_overrides: dict[str, Any]
) -> Settings:
    return Settings(
        env="test",
        database_url=database_url,
        redis_url=redis_url,
        storage_dir=tmp_path / "storage",
        lease_seconds=3,
        reaper_interval=1,
        reaper_bound_seconds=10,
        relay_interval=0.5,
        breaker_reset_timeout=2,
        # TestClient's default host, besides the loopback names real clients use.
        allowed_hosts=["testserver", "localhost", "127.0.0.1"],
        metrics_token=services.METRICS_TOKEN,
        **settings_overrides,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a subprocess build exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        text = json.dumps(raw) if isinstance(raw, dict | list) else str(raw)
        env[f"CONVEYOR_{name.upper()}"] = text
    env["CONVEYOR_LOG_FORMAT"] = "json"
    return env


@pytest.fixture
def platform(
    settings: Settings, sessions: db.Sessions, tmp_path: Path
) -> Iterator[services.Platform]:
    """Real API and worker processes; start the ones the test needs."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    with services.platform(settings_env(settings), log_dir) as running:
        yield running


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slow(seconds): a module that runs for about that long (on 2 cores, under xdist); "
        "the longest are collected first",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest modules first: xdist (--dist loadfile) hands out modules in collection order,
    and a 4-minute module handed out last would run on alone at the end of the suite.
    (A stable sort: the same order on every xdist worker, as xdist requires.)"""

    def seconds(item: pytest.Item) -> float:
        marker = item.get_closest_marker("slow")
        return float(marker.args[0]) if marker else 0.0

    items.sort(key=seconds, reverse=True)
