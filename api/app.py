"""The FastAPI app factory: ``uvicorn --factory api.app:create_app``.

Nothing is built at import. ``create_app`` wires routes, middleware and error handlers; the
lifespan builds the process's engine, breaker, publisher and Redis client on ``app.state``
(none of them connects eagerly, so the API starts even while Redis or PostgreSQL is down),
runs the recovery loop (relay, reaper, lost messages), and tears everything down on
shutdown.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

import anyio.to_thread
import structlog
from celery import Celery
from fastapi import FastAPI
from prometheus_client import start_http_server

from api import error_handlers
from api.dispatcher import Dispatcher
from api.guards import (
    BodyLimitMiddleware,
    GZipWhenAccepted,
    ProblemCORSMiddleware,
    SecurityHeadersMiddleware,
    TrustedHostMiddleware,
)
from api.log_notifier import LogNotifier
from api.middleware import RequestContextMiddleware
from api.routes import (
    api_keys,
    deployments,
    docs,
    health,
    imports,
    job_logs,
    jobs,
    metrics,
    queues,
    schedules,
    secrets,
)
from core import async_db, db, tracing
from core.auth_throttle import AuthThrottle
from core.broker.async_publisher import AsyncJobPublisher
from core.broker.breaker import RedisBreaker
from core.broker.celery_config import celery_config
from core.broker.publisher import JobPublisher
from core.broker.redis_client import make_redis
from core.imports.registry import ImporterRegistry
from core.lifecycle.recovery import RecoveryLoop
from core.logging import configure_logging
from core.metrics import build_registry
from core.settings import Settings, get_settings


def _version() -> str:
    try:
        return version("conveyor")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


API_DB_POOL_SIZE = 20


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # Sync endpoints run on anyio's 40-thread pool; a pool smaller than that makes
    # SQLAlchemy open and close overflow connections on every burst (measured: most of the
    # API's CPU went to connection setup under 8 concurrent clients).
    engine = db.make_engine(settings, pool_size=API_DB_POOL_SIZE)
    sessions = db.make_sessionmaker(engine)
    # The hot routes' async pool; opened without waiting so the API starts while the
    # database is down (those requests answer 503 until it is back).
    pool = async_db.make_async_pool(settings, max_size=API_DB_POOL_SIZE)
    await pool.open(wait=False)
    app.state.pool = pool
    breaker = RedisBreaker.from_settings(settings)
    publisher = JobPublisher.from_settings(settings, breaker)
    redis_client = make_redis(settings)
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.breaker = breaker
    app.state.publisher = publisher
    app.state.redis = redis_client
    async_publisher = AsyncJobPublisher.from_settings(settings, breaker)
    app.state.dispatcher = Dispatcher(pool, async_publisher)
    # Only for asking the workers (GET /v1/queues): publishing does not go through Celery.
    app.state.celery = Celery("conveyor-api", set_as_current=False)
    app.state.celery.conf.update(celery_config(settings))
    app.state.metrics = build_registry(
        sessions, breaker, redis_client, deployment_slots=settings.deploy_max_running
    )
    app.state.log_notifier = LogNotifier(
        settings.libpq_url, connect_timeout=settings.database_connect_timeout
    )
    app.state.auth_throttle = AuthThrottle(
        redis_client=redis_client,
        breaker=breaker,
        limit=settings.auth_failure_limit,
        window=settings.auth_failure_window,
    )
    metrics_server = None
    if settings.metrics_port is not None:
        try:
            metrics_server, _ = start_http_server(
                settings.metrics_port, addr=settings.metrics_host, registry=app.state.metrics
            )
        except OSError as error:
            # `conveyor api --workers N`: the first process binds the port, the others go
            # on without it (scrape them through /metrics with the token instead).
            structlog.get_logger(__name__).warning(
                "metrics.port_unavailable", port=settings.metrics_port, error=str(error)
            )
    # Relay, reaper and lost-message check on their own thread: every API process recovers
    # the platform's jobs as every worker does, so no beat and no single process is needed.
    recovery = RecoveryLoop(
        settings, sessions=sessions, publisher=publisher, redis_client=redis_client
    ).start()
    # Everything built so far lives as long as the process: out of the collector's sight,
    # a full collection no longer walks it (tens of milliseconds added to some requests).
    gc.freeze()
    try:
        yield
    finally:
        await anyio.to_thread.run_sync(recovery.stop)
        await app.state.log_notifier.close()
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        await app.state.dispatcher.close()
        await async_publisher.close()
        app.state.celery.close()
        publisher.close()
        redis_client.close()
        await pool.close()
        engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings if settings is not None else get_settings()
    configure_logging(settings)
    app = FastAPI(
        title="Conveyor",
        version=_version(),
        summary="Background jobs on Celery + Redis, with PostgreSQL as the source of truth.",
        lifespan=lifespan,
        docs_url=None,  # served by api.routes.docs, under a strict CSP
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.settings = settings
    # Declarations are read lazily (and again when their file changes): nothing at start.
    app.state.importers = ImporterRegistry(settings.importers_dir)
    error_handlers.install(app)
    _add_middleware(app, settings)
    for router in (health.router, metrics.router, jobs.router, api_keys.router, docs.router):
        app.include_router(router)
    for router in (imports.router, deployments.router, job_logs.router, secrets.router):
        app.include_router(router)
    for router in (schedules.router, queues.router):
        app.include_router(router)
    if tracing.configure("conveyor-api"):
        # Outermost, so the request's span is current in our middleware and the routes.
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="health/.*,metrics")
    return app


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    """Outermost last. A request meets: request id and access log, security headers, the
    Host check, CORS, the body cap, compression, then the routes."""
    app.add_middleware(GZipWhenAccepted, minimum_size=1024)
    app.add_middleware(
        BodyLimitMiddleware,
        json_limit=settings.max_json_body_bytes,
        upload_limit=settings.max_upload_bytes,
    )
    app.add_middleware(
        ProblemCORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Idempotency-Key",
            "X-Request-ID",
            "traceparent",
            "tracestate",
        ],
        expose_headers=["Location", "X-Request-ID", "Retry-After"],
    )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestContextMiddleware)
