"""The Celery app: configuration from core, one task per job kind, beat schedule, and the
per-process runtime (engine, sessions, publisher). ``app`` is the worker/beat entrypoint."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import redis
import structlog
from celery import Celery, signals
from celery.schedules import schedule

from core import db
from core.broker.breaker import RedisBreaker
from core.broker.celery_config import celery_config
from core.broker.publisher import JobPublisher
from core.broker.redis_client import make_redis
from core.broker.task_names import REAPER_TASK, RELAY_TASK, route_for
from core.deployments.limits import DeploymentAdmission
from core.lifecycle.admission import Admission
from core.logging import clear_context, configure_logging
from core.settings import Settings, get_settings
from jobs import diagnostics, periodic
from jobs.deployments.run_deployment import run_deployment
from jobs.imports.run_import import run_import
from jobs.job_runner import JobBody, JobTask

log = structlog.get_logger(__name__)

JOB_BODIES: dict[str, JobBody] = {
    "noop": diagnostics.run_noop,
    "sleep": diagnostics.run_sleep,
    "import": run_import,
    "deployment": run_deployment,
}


def job_admissions(settings: Settings) -> dict[str, Admission]:
    """Kinds whose jobs may be held back by a limit before they claim a worker slot."""
    return {"deployment": DeploymentAdmission(max_running=settings.deploy_max_running)}


class Runtime:
    """Per-process resources, built lazily in the process that runs tasks (after fork)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def engine(self) -> Any:
        return db.make_engine(
            self.settings.sqlalchemy_url,
            connect_timeout=self.settings.database_connect_timeout,
            pool_size=2,
        )

    @cached_property
    def sessions(self) -> db.Sessions:
        return db.make_sessionmaker(self.engine)

    @cached_property
    def publisher(self) -> JobPublisher:
        return JobPublisher.from_settings(self.settings, RedisBreaker.from_settings(self.settings))

    @cached_property
    def redis(self) -> redis.Redis:
        """For the relay's broker-epoch check; its calls go through the publisher's breaker."""
        return make_redis(self.settings)


class ConveyorCelery(Celery):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        super().__init__("conveyor", set_as_current=True)
        self.conf.update(celery_config(settings))
        # Survive losing Redis and reconnect within a second after it is back.
        self.conf.broker_transport = "jobs.broker_transport:Transport"
        self.conf.worker_consumer = "jobs.worker_consumer:QuickReconnectConsumer"
        self.conf.conveyor_settings = settings
        self._runtime: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime(self.conf.conveyor_settings)
        return self._runtime

    def reset_runtime(self) -> None:
        """Forget the parent's connections in a freshly forked pool process."""
        self._runtime = None


def _register_job_task(
    app: ConveyorCelery, kind: str, body: JobBody, admission: Admission | None
) -> None:
    def run(task: JobTask, job_id: str) -> None:
        task.run_job(job_id, body, admission)

    run.__name__ = f"run_{kind}"
    app.task(name=route_for(kind).task, base=JobTask, bind=True)(run)


def _register_periodic(app: ConveyorCelery, settings: Settings) -> None:
    @app.task(name=RELAY_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
    def relay_outbox() -> dict[str, Any]:
        runtime = app.runtime
        return periodic.relay_outbox(runtime.sessions, runtime.publisher, runtime.redis)

    @app.task(name=REAPER_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
    def reap_leases() -> dict[str, Any]:
        return periodic.reap_leases(app.runtime.sessions, app.runtime.publisher)

    # A tick that waited longer than its interval is stale: drop it rather than pile up.
    app.conf.beat_schedule = {
        "relay-outbox": {
            "task": RELAY_TASK,
            "schedule": schedule(settings.relay_interval),
            "options": {"expires": settings.relay_interval * 2},
        },
        "reap-leases": {
            "task": REAPER_TASK,
            "schedule": schedule(settings.reaper_interval),
            "options": {"expires": settings.reaper_interval * 2},
        },
    }


def make_celery(settings: Settings) -> ConveyorCelery:
    app = ConveyorCelery(settings)
    admissions = job_admissions(settings)
    for kind, body in JOB_BODIES.items():
        _register_job_task(app, kind, body, admissions.get(kind))
    _register_periodic(app, settings)

    def _logging(**_: Any) -> None:
        configure_logging(settings)

    def _after_fork(**_: Any) -> None:
        app.reset_runtime()

    def _clear_log_context(**_: Any) -> None:
        clear_context()

    # Connecting setup_logging stops Celery from configuring logging its own way.
    signals.setup_logging.connect(_logging, weak=False)
    signals.worker_process_init.connect(_after_fork, weak=False)
    signals.task_postrun.connect(_clear_log_context, weak=False)

    return app


app = make_celery(get_settings())
