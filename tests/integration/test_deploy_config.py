"""The container setup, proven as far as this machine allows (no Docker engine): the compose
file is what Debian's ``docker-compose config`` accepts, with and without the Sentinel
profile; each Conveyor service runs a real ``conveyor`` command; what a service waits for
is health-checked; workers have resource limits; secrets come from an uncommitted env file
whose committed example names every required variable; the Dockerfiles are multi-stage,
on a pinned base, non-root, without pip or build tools in the final image."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
EXAMPLE = ROOT / ".env.example"
DOCKERFILES = (ROOT / "api.Dockerfile", ROOT / "worker.Dockerfile")
WORKERS = ("worker-default", "worker-deployments")


def compose_config(*profiles: str) -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing (scripts/setup installs it)"
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    done = subprocess.run(
        [binary, "--env-file", str(EXAMPLE), "-f", str(COMPOSE), *flags, "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    full: dict[str, Any] = compose_config("sentinel")["services"]
    return full


def test_the_default_stack_and_the_sentinel_profile(services: dict[str, Any]) -> None:
    default = {name for name, service in services.items() if not service.get("profiles")}
    assert default == {
        "postgres",
        "redis",
        "migrate",
        "api",
        "worker-default",
        "worker-deployments",
        "flower",
    }
    sentinel = {name for name, service in services.items() if service.get("profiles")}
    assert sentinel == {"redis-replica", "redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3"}
    assert all(services[name]["profiles"] == ["sentinel"] for name in sentinel)
    assert compose_config()["services"]  # valid without the profile too


def test_conveyor_services_run_real_commands(services: dict[str, Any]) -> None:
    ours = {name: s for name, s in services.items() if "build" in s}
    assert set(ours) == {"migrate", "api", "worker-default", "worker-deployments", "flower"}
    for name, service in ours.items():
        command = service.get("command") or dockerfile_cmd(Path(service["build"]["dockerfile"]))
        assert command[0] == "conveyor", name
        build_parser().parse_args(command[1:])  # exits (fails the test) if not a real command


def test_what_a_service_waits_for_is_health_checked(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            target = services[dependency]
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dependency}'s health"
            elif condition["condition"] == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dependency} is a one-shot"
    for name in ("api", "flower", *WORKERS, "postgres", "redis"):
        assert "healthcheck" in services[name], name


def test_workers_have_resource_limits(services: dict[str, Any]) -> None:
    for name in (*WORKERS, "api", "flower"):
        limits = services[name]["deploy"]["resources"]["limits"]
        assert limits["cpus"]
        assert limits["memory"]


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if "build" not in service:
            assert re.search(r":\d+\.\d+(\.\d+)?(-[a-z]+)?$", service["image"]), name


def test_secrets_come_from_an_uncommitted_env_file_with_a_committed_example() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", ".env", ".env.example"], capture_output=True, text=True, cwd=ROOT
    ).stdout.split()
    assert tracked == [".env.example"]
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    assert "CONVEYOR_SECRET_KEY" in required
    example = {line.split("=", 1)[0] for line in EXAMPLE.read_text().splitlines() if "=" in line}
    assert required <= example


def dockerfile_cmd(path: Path) -> list[str]:
    text = (ROOT / path).read_text()
    command: list[str] = yaml.safe_load(re.findall(r"^CMD (\[.*\])$", text, re.M)[-1])
    return command


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_are_multi_stage_pinned_and_non_root(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", base.group(1))
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) >= 2
    final = stages[-1]
    assert re.search(r"^USER conveyor$", final, re.M)
    assert "pip install" not in final
    assert not re.search(r"build-essential|\bgcc\b|python3-dev", final)
    assert "rm -rf /usr/local/lib/python3.11/site-packages/pip" in final
    assert "pip uninstall -y pip" in stages[0]
    assert dockerfile_cmd(dockerfile)[0] == "conveyor"
