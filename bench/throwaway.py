"""A migrated database and a redis-server of a benchmark's own, in a temporary directory,
removed afterwards: a benchmark never touches the machine's Redis or the ``conveyor``
database."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings import Settings
from tests import services


@dataclass(frozen=True)
class Throwaway:
    database_url: str
    redis: services.RedisServer
    directory: Path  # for storage, logs and the benchmark's files

    def settings(self, **overrides: Any) -> Settings:
        """Settings on this database, Redis and directory (no .env file is read)."""
        return Settings(
            _env_file=None,
            env="test",
            database_url=self.database_url,
            redis_url=self.redis.url,
            storage_dir=self.directory / "storage",
            **overrides,
        )


@contextmanager
def throwaway() -> Iterator[Throwaway]:
    name = services.unique_name("conveyor_bench")
    url = services.create_migrated_database(name)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            redis_server = services.RedisServer(Path(tmp))
            redis_server.start()
            try:
                yield Throwaway(url, redis_server, Path(tmp))
            finally:
                redis_server.stop()
    finally:
        services.drop_database(name)
