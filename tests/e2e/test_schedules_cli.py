"""``conveyor schedules …`` and ``conveyor queues …``: the installed console script in
subprocesses, against a real API process that ticks the schedules it creates."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from core import db
from core.api_keys import Role
from core.settings import Settings
from tests import services
from tests.conftest import settings_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow(110)]

TICK = {"CONVEYOR_SCHEDULE_TICK_INTERVAL": "0.2"}


def test_schedules_and_queues_from_the_command_line(
    platform: services.Platform, sessions: db.Sessions, settings: Settings
) -> None:
    platform.start_api(TICK)
    key = services.new_api_key(sessions, settings, Role.operator, "ops")
    env = {
        **settings_env(settings),
        "CONVEYOR_API_URL": platform.api_url or "",
        "CONVEYOR_API_KEY": key,
    }

    def conveyor(*args: str, code: int = 0) -> str:
        done = subprocess.run(
            [str(services.VENV_BIN / "conveyor"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == code, f"{args}: {done.stdout}\n{done.stderr}"
        return done.stdout if code == 0 else done.stderr

    created = conveyor(
        "schedules", "create", "beat", "--every", "2", "--kind", "noop", "--catch-up", "all",
        "--overlap", "allow",
    )  # fmt: skip
    assert "beat" in created
    assert "every 2s" in created
    assert "beat" in conveyor("schedules", "list")
    time.sleep(5)
    firings = conveyor("schedules", "firings", "beat").splitlines()
    assert len(firings) >= 2
    assert all(" created " in line for line in firings), firings
    assert json.loads(conveyor("schedules", "get", "beat"))["last_fired_at"] is not None

    assert " paused " in conveyor("schedules", "pause", "beat")
    assert "every 5s" in conveyor("schedules", "update", "beat", "--every", "5")
    refused = conveyor(
        "schedules", "create", "evil", "--every", "60", "--kind", "import", "--importer",
        "products", "--inbox-pattern", "../*.csv", code=2,
    )  # fmt: skip
    assert "bad_request" in refused
    assert "job.inbox_pattern" in refused
    assert "Deleted schedule" in conveyor("schedules", "delete", "beat")
    assert "not_found" in conveyor("schedules", "get", "beat", code=2)

    assert "default       paused" in conveyor("queues", "pause", "default")
    listed = conveyor("queues", "list")
    assert "default       paused" in listed
    assert "imports       active" in listed
    assert "default       active" in conveyor("queues", "resume", "default")
    assert "not_found" in conveyor("queues", "pause", "nope", code=2)
