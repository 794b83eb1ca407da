"""The Celery app: configuration from core, one task per job kind, the per-process runtime
(engine, sessions, publisher), and the recovery loop in every worker's main process.
``app`` is the worker entrypoint."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, ClassVar

import redis
import sqlalchemy as sa
import structlog
from celery import Celery, bootsteps, signals
from celery.apps import worker as celery_worker_app
from opentelemetry.instrumentation.celery import CeleryInstrumentor

from core import db, tracing
from core.broker.breaker import RedisBreaker
from core.broker.celery_config import celery_config
from core.broker.publisher import JobPublisher
from core.broker.redis_client import make_redis
from core.broker.task_names import route_for
from core.deployments.limits import DeploymentAdmission
from core.lifecycle.admission import Admission
from core.lifecycle.recovery import RecoveryLoop
from core.logging import clear_context, configure_logging
from core.settings import Settings, get_settings
from jobs import diagnostics
from jobs.deployments import run_dir
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
    """Per-process resources, built lazily in the process that uses them (after fork)."""

    def __init__(self, settings: Settings, *, pool_size: int = 2) -> None:
        self.settings = settings
        self.pool_size = pool_size

    @cached_property
    def engine(self) -> sa.Engine:
        # A job body and its heartbeat each hold a connection at times.
        return db.make_engine(self.settings, pool_size=self.pool_size)

    @cached_property
    def statements_engine(self) -> sa.Engine:
        """For the claim and the finish (one statement each, in autocommit): no pre-ping, as
        both are retried while the database is unavailable (jobs/job_runner.py)."""
        return db.make_engine(self.settings, pool_size=1, pre_ping=False)

    @cached_property
    def sessions(self) -> db.Sessions:
        return db.make_sessionmaker(self.engine)

    @cached_property
    def publisher(self) -> JobPublisher:
        return JobPublisher.from_settings(self.settings, RedisBreaker.from_settings(self.settings))

    @cached_property
    def redis(self) -> redis.Redis:
        """For the relay's broker-epoch and queue-depth reads, through the publisher's
        breaker."""
        return make_redis(self.settings)

    def close(self) -> None:
        if "publisher" in self.__dict__:
            self.publisher.close()
        if "redis" in self.__dict__:
            self.redis.close()
        if "engine" in self.__dict__:
            self.engine.dispose()


class ConveyorCelery(Celery):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        super().__init__("conveyor", set_as_current=True)
        self.conf.update(celery_config(settings))
        # Survive losing Redis and reconnect within a second after it is back (or after a
        # Sentinel failover).
        transport = "SentinelTransport" if settings.sentinel_addresses else "Transport"
        self.conf.broker_transport = f"jobs.broker_transport:{transport}"
        self.conf.worker_consumer = "jobs.worker_consumer:QuickReconnectConsumer"
        # On the app object, not in ``conf``: Celery shows its conf to anyone who can reach
        # the broker (``inspect conf``, Flower), and settings hold credentials.
        self.settings = settings
        self._runtime: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime(self.settings)
        return self._runtime

    def reset_runtime(self) -> None:
        """Forget the parent's connections in a freshly forked pool process."""
        self._runtime = None


class RecoveryStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs the recovery loop (relay, reaper, lost messages) in the worker's main process,
    beside the pool, so it never waits for a job slot. Started after the pool, so the first
    pool processes are forked before it opens any connection."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.runtime: Runtime | None = None
        self.loop: RecoveryLoop | None = None

    def start(self, worker: Any) -> None:
        settings: Settings = worker.app.settings
        runtime = Runtime(settings, pool_size=1)
        self.runtime = runtime
        # Pool processes forked later (to replace one that died) must not touch these
        # connections: in the child, drop them without closing the parent's sockets.
        os.register_at_fork(after_in_child=lambda: runtime.engine.dispose(close=False))
        self.loop = RecoveryLoop(
            settings,
            sessions=runtime.sessions,
            publisher=runtime.publisher,
            redis_client=runtime.redis,
        ).start()

    def stop(self, worker: Any) -> None:
        if self.loop is not None:
            self.loop.stop()
        if self.runtime is not None:
            self.runtime.close()


def _register_job_task(
    app: ConveyorCelery, kind: str, body: JobBody, admission: Admission | None
) -> None:
    queue = route_for(kind).queue  # where the publisher sends this task (celery_routes)

    def run(task: JobTask, job_id: str) -> None:
        task.run_job(job_id, body, queue=queue, admission=admission)

    run.__name__ = f"run_{kind}"
    app.task(name=route_for(kind).task, base=JobTask, bind=True)(run)


class TaskSpans(CeleryInstrumentor):
    """The Celery instrumentation's task-run spans (children of the publish span whose
    context the message carries), without its publish hooks: we publish with ``send_task``,
    for which its ``after_task_publish`` hook never ends the span its ``before_task_publish``
    started (0.66b1: the task is not in the publisher's registry); core.broker.publisher
    makes that span instead."""

    def _trace_before_publish(self, *args: Any, **kwargs: Any) -> None:
        return None

    @staticmethod
    def _trace_after_publish(*args: Any, **kwargs: Any) -> None:
        return None


def _say_as_json(msg: str, f: Any = sys.__stderr__) -> None:
    """Celery's worker writes a few lines from its signal handlers straight to the terminal
    ("worker: Warm shutdown (MainProcess)"), with a raw ``os.write`` because logging from a
    signal handler could deadlock. In JSON mode they are written the same raw way, as JSON
    records, so nothing the worker prints is unstructured."""
    record = {
        "event": msg.strip(),
        "level": "warning",
        "logger": "celery.apps.worker",
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    os.write(f.fileno(), (json.dumps(record) + "\n").encode())


def make_celery(settings: Settings) -> ConveyorCelery:
    # Before Celery says anything (its start-up warnings included); Celery's setup_logging
    # signal below configures the same again once it would set up its own.
    configure_logging(settings)
    app = ConveyorCelery(settings)
    if settings.log_format == "json":
        celery_worker_app.safe_say = _say_as_json
    admissions = job_admissions(settings)
    if tracing.configure("conveyor-worker"):
        TaskSpans().instrument()  # type: ignore[no-untyped-call]
    for kind, body in JOB_BODIES.items():
        _register_job_task(app, kind, body, admissions.get(kind))
    app.steps["worker"].add(RecoveryStep)

    def _logging(**_: Any) -> None:
        configure_logging(settings)

    def _after_fork(**_: Any) -> None:
        app.reset_runtime()

    def _clear_log_context(**_: Any) -> None:
        clear_context()

    def _sweep_run_dirs(**_: Any) -> None:
        # A worker killed mid-deployment left its private directory (key, variables).
        run_dir.sweep(run_dir.run_root(settings.deploy_run_dir))

    # Connecting setup_logging stops Celery from configuring logging its own way.
    signals.setup_logging.connect(_logging, weak=False)
    signals.worker_process_init.connect(_after_fork, weak=False)
    signals.task_postrun.connect(_clear_log_context, weak=False)
    signals.worker_ready.connect(_sweep_run_dirs, weak=False)

    return app


app = make_celery(get_settings())
