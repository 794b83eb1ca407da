"""Fixtures of the HTTP contract tests: the real app (lifespan included) over the test's
database and Redis, and keys of each role. A module that needs other settings defines its
own ``client``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core import db
from core.settings import Settings
from tests.integration.api_support import Keys, make_keys


@pytest.fixture
def client(settings: Settings, sessions: db.Sessions) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def keys(sessions: db.Sessions, settings: Settings) -> Keys:
    return make_keys(sessions, settings)
