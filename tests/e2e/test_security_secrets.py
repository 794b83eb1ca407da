"""No secret in any view, on real processes: the platform logs into PostgreSQL as a
non-superuser owner role and into a password-protected Redis as an ACL user; then `celery
inspect conf`/`report`/`stats`, every Flower page, the API's probes, metrics and errors,
Flower's environment and every process's log (at DEBUG) are searched for each secret. A job
that fails inside the database driver shows its caller a code and a sentence, no SQL."""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
import redis
import sqlalchemy as sa

from core import db
from core.api_keys import Role
from core.settings import Settings
from tests import services
from tests.conftest import settings_env
from tests.e2e.import_support import TERMINAL, import_settings, wait_terminal

pytestmark = pytest.mark.e2e

FLOWER_PAGES = (
    "/",
    "/workers",
    "/tasks",
    "/broker",
    "/api/workers?refresh=1",
    "/api/workers?status=1",
    "/api/tasks",
    "/api/queues/length",
    "/metrics",
    "/healthcheck",
    "/tasks/datatable?draw=1&start=0&length=50&search%5Bvalue%5D=&order%5B0%5D%5Bcolumn%5D=0"
    "&order%5B0%5D%5Bdir%5D=asc&columns%5B0%5D%5Bdata%5D=name",
)
MAX_CRAWLED = 60


@dataclass
class Deployment:
    platform: services.Platform
    settings: Settings
    sessions: db.Sessions
    client: httpx.Client
    flower_url: str
    flower_auth: tuple[str, str]
    secrets: dict[str, str]
    redis: services.RedisServer

    def env(self) -> dict[str, str]:
        return self.platform.env


@pytest.fixture(scope="module")
def deployed(database_url, engine, tmp_path_factory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("secrets")
    redis_server = services.RedisServer(
        tmp, username="conveyor", password="redis" + secrets.token_hex(12)
    )
    redis_server.start()
    assert redis_server.password is not None
    known = {
        "database password": str(sa.engine.make_url(database_url).password),
        "redis password": redis_server.password,
        "secret key": "key" + secrets.token_hex(20),
        "flower password": "flower" + secrets.token_hex(10),
        "metrics token": "metrics" + secrets.token_hex(16),
    }
    settings = import_settings(
        database_url,
        redis_server,
        tmp / "storage",
        redis_url=redis_server.url,
        redis_username=redis_server.username,
        redis_password=known["redis password"],
        secret_key=known["secret key"],
        flower_password=known["flower password"],
        metrics_token=known["metrics token"],
        log_level="DEBUG",
    )
    sessions = db.make_sessionmaker(engine)
    key = services.new_api_key(sessions, settings, Role.admin)
    log_dir = tmp / "logs"
    log_dir.mkdir()
    try:
        with services.platform(settings_env(settings), log_dir) as platform:
            platform.start_api()
            platform.start_worker()
            _, flower_url = platform.start_flower()
            assert platform.api_url is not None
            with httpx.Client(
                base_url=platform.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
            ) as client:
                yield Deployment(
                    platform,
                    settings,
                    sessions,
                    client,
                    flower_url,
                    (settings.flower_user, known["flower password"]),
                    known,
                    redis_server,
                )
    finally:
        redis_server.stop()


def leaks(text: str, known: dict[str, str]) -> list[str]:
    return [name for name, value in known.items() if value in text]


def run_job(deployed: Deployment, body: dict[str, object]) -> dict[str, object]:
    response = deployed.client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return wait_terminal(deployed.client, response.json()["id"], timeout=60)


def test_platform_runs_as_a_non_superuser_owner_on_a_password_protected_redis(deployed):
    job = run_job(deployed, {"kind": "noop", "params": {}})
    assert job["status"] == "succeeded"

    with db.transaction(deployed.sessions) as session:
        role, superuser = session.execute(
            sa.text("SELECT rolname, rolsuper FROM pg_roles WHERE rolname = current_user")
        ).one()
        owners = set(
            session.scalars(sa.text("SELECT tableowner FROM pg_tables WHERE schemaname = 'public'"))
        )
    assert not superuser
    assert owners == {role}
    anonymous = redis.Redis(port=deployed.redis.port, socket_timeout=1)
    with pytest.raises(redis.AuthenticationError):
        anonymous.set("x", "y")  # the default user is off: no password, no Redis
    anonymous.close()


def celery(deployed: Deployment, *args: str) -> str:
    worker = deployed.client.get("/health/live")  # the platform is up
    assert worker.status_code == 200
    result = subprocess.run(
        [str(services.VENV_BIN / "celery"), "-A", "jobs.celery_app:app", *args, "--timeout", "5"],
        env=deployed.env(),
        cwd=services.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_celery_inspect_conf_report_and_stats_show_no_secret(deployed):
    conf = celery(deployed, "inspect", "conf")
    report = celery(deployed, "inspect", "report")
    stats = celery(deployed, "inspect", "stats")

    assert "task_acks_late" in conf
    assert "broker_url" in conf
    assert "software ->" in report
    assert "broker" in stats
    assert "conveyor_settings" not in conf
    for output in (conf, report, stats):
        assert leaks(output, deployed.secrets) == []


def crawl_flower(deployed: Deployment) -> dict[str, str]:
    """Every page of the list, the worker's and a task's, and every same-origin link found
    on them (bounded)."""
    with httpx.Client(base_url=deployed.flower_url, auth=deployed.flower_auth, timeout=30) as web:
        workers = web.get("/api/workers?refresh=1").json()
        tasks = web.get("/api/tasks").json()
        assert workers, "Flower has seen no worker"
        assert tasks, "Flower has seen no task"
        worker, task = next(iter(workers)), next(iter(tasks))
        pending = [
            *FLOWER_PAGES,
            f"/worker/{worker}",
            f"/task/{task}",
            f"/api/task/info/{task}",
            f"/api/workers?workername={worker}",
        ]
        pages: dict[str, str] = {}
        while pending and len(pages) < MAX_CRAWLED:
            path = pending.pop(0)
            if path in pages:
                continue
            response = web.get(path)
            pages[path] = response.text + "\n".join(
                f"{k}: {v}" for k, v in response.headers.items()
            )
            for link in re.findall(r'href="([^"#]+)"', response.text):
                target = urlsplit(urljoin(deployed.flower_url + path, link))
                if target.netloc == urlsplit(deployed.flower_url).netloc:
                    pending.append(target.path + (f"?{target.query}" if target.query else ""))
    return pages


def test_no_flower_page_shows_a_secret(deployed):
    run_job(deployed, {"kind": "noop", "params": {}})  # a task for the task pages

    def flower_saw_a_task() -> bool:
        tasks = httpx.get(f"{deployed.flower_url}/api/tasks", auth=deployed.flower_auth)
        return bool(tasks.json())

    services.wait_until(flower_saw_a_task, timeout=30, message="Flower sees a task")
    pages = crawl_flower(deployed)

    everything = "\n".join(pages.values())
    assert "task_acks_late" in everything  # the worker page fetched the worker's config
    assert len(pages) >= len(FLOWER_PAGES)
    for path, text in pages.items():
        assert leaks(text, deployed.secrets) == [], path
    assert httpx.get(f"{deployed.flower_url}/workers").status_code == 401


def test_flower_process_gets_only_the_variables_it_needs(deployed):
    flower = next(p for p in deployed.platform.processes if p.name == "flower")
    environ = Path(f"/proc/{flower.popen.pid}/environ").read_bytes().decode(errors="replace")
    names = {entry.partition("=")[0] for entry in environ.split("\0") if entry}

    assert leaks(environ, deployed.secrets) == ["redis password", "flower password"]
    assert not {"CONVEYOR_DATABASE_URL", "CONVEYOR_SECRET_KEY", "CONVEYOR_METRICS_TOKEN"} & names


def test_a_job_failing_inside_the_driver_shows_no_sql(deployed):
    name = sa.engine.make_url(deployed.settings.sqlalchemy_url).database
    assert name is not None
    with services.admin_connection(name) as admin:  # a table that disagrees with its importer
        admin.execute("ALTER TABLE products ADD CONSTRAINT no_boom CHECK (name <> 'boom')")
    try:
        response = deployed.client.post(
            "/v1/imports",
            data={"importer": "products"},
            files={"file": ("boom.csv", b"sku,name\nA,fine\nB,boom\n", "text/csv")},
        )
        assert response.status_code == 202, response.text
        job = wait_terminal(deployed.client, response.json()["id"], timeout=60)
    finally:
        with services.admin_connection(name) as admin:
            admin.execute("ALTER TABLE products DROP CONSTRAINT no_boom")
            admin.execute("TRUNCATE products")

    assert job["status"] == "failed"
    assert job["error"]["code"] == "load_failed"
    events = deployed.client.get(f"/v1/jobs/{job['id']}/events").text
    shown = f"{job['error']} {job['result']} {events}"
    driver_words = (
        "no_boom",
        "violates",
        "constraint",
        "copy ",
        "insert into",
        "detail:",
        "psycopg",
    )
    for word in driver_words:
        assert word not in shown.lower(), word
    worker = next(p for p in deployed.platform.processes if p.name == "worker")
    logged = [line for line in worker.output().splitlines() if "import.batch_refused" in line]
    assert logged
    assert job["id"] in logged[0]
    assert "no_boom" in logged[0]


def test_no_secret_in_api_views_or_any_log(deployed):
    views = [
        deployed.client.get(path)
        for path in ("/health/live", "/health/ready", "/health/redis", "/health/circuit-breaker")
    ]
    views.append(deployed.client.get("/metrics", headers=services.METRICS_HEADERS))
    views.append(
        deployed.client.get(
            "/metrics", headers={"Authorization": f"Bearer {deployed.secrets['metrics token']}"}
        )
    )
    views.append(deployed.client.get("/v1/jobs?limit=500"))
    assert views[-2].status_code == 200
    assert "conveyor_jobs" in views[-2].text
    for view in views:
        assert leaks(view.text, deployed.secrets) == [], view.url

    logs = {process.name: process.output() for process in deployed.platform.processes}
    assert "DEBUG" in logs["worker"].upper()  # the lines of every level are in there
    for name, text in logs.items():
        assert leaks(text, deployed.secrets) == [], name
    assert {job["status"] for job in views[-1].json()["items"]} <= TERMINAL
