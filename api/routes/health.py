"""/health/*: unauthenticated probes, like Kubernetes expects.

live: the process answers (no dependencies, so a database outage never restarts the pods).
ready: the database answers (503 otherwise); Redis down only *degrades* readiness, because
jobs are still accepted into the outbox and status is still served from PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Breaker, Pool, RedisClient
from api.schemas.health import (
    BreakerSnapshot,
    Checks,
    DatabaseCheck,
    Live,
    NotReady,
    Outbox,
    Ready,
    RedisCheck,
)
from core import health
from core.broker.breaker import RedisBreaker
from core.broker.queue_depth import queue_depths
from core.broker.task_names import QUEUES
from core.errors import DatabaseUnavailable

router = APIRouter(prefix="/health", tags=["health"])

REDIS_DOWN = (
    "Redis is unreachable (or the circuit breaker is open): jobs are accepted and wait in "
    "the outbox; the relay publishes them when Redis is back. Status reads are unaffected."
)


@router.get("/live", summary="Liveness")
async def live() -> Live:
    return Live()


def _not_ready(checks: Checks) -> JSONResponse:
    unavailable = DatabaseUnavailable()
    body = NotReady(code=unavailable.code, message=unavailable.message, checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=503)


def _redis_view(redis_client: redis.Redis, breaker: RedisBreaker) -> tuple[dict[str, Any], Any]:
    """PING, and the queue depths when Redis is up: sync Redis calls with short timeouts
    behind the breaker, run together on one worker thread."""
    check = health.check_redis(redis_client, breaker)
    depths = queue_depths(redis_client, breaker) if check["status"] == "up" else None
    return check, depths


@router.get(
    "/ready",
    summary="Readiness",
    response_model=Ready,
    responses={503: {"model": NotReady, "description": "The database is unavailable."}},
)
async def ready(pool: Pool, redis_client: RedisClient, breaker: Breaker) -> Ready | JSONResponse:
    redis_check, depths = await anyio.to_thread.run_sync(_redis_view, redis_client, breaker)
    database_check, outbox_view = await health.check_database(pool)
    checks = Checks(
        database=DatabaseCheck.model_validate(database_check),
        redis=RedisCheck.model_validate(redis_check),
    )
    if outbox_view is None:
        return _not_ready(checks)
    outbox = Outbox.model_validate(outbox_view)
    if checks.redis.status == "up":
        return Ready(status="ready", checks=checks, outbox=outbox, queues=depths)
    return Ready(
        status="degraded",
        detail=REDIS_DOWN,
        checks=checks,
        outbox=outbox,
        queues=dict.fromkeys(QUEUES),
    )


@router.get("/redis", summary="Redis reachability and breaker state")
def redis_health(redis_client: RedisClient, breaker: Breaker) -> RedisCheck:
    return RedisCheck.model_validate(health.check_redis(redis_client, breaker))


@router.get("/circuit-breaker", summary="Redis circuit breaker state and counters")
async def circuit_breaker(breaker: Breaker) -> BreakerSnapshot:
    snapshot = breaker.snapshot()
    # Unauthenticated: name the error; its text (hosts, users) stays in the log.
    if snapshot["last_error"]:
        snapshot["last_error"] = snapshot["last_error"].partition(":")[0]
    return BreakerSnapshot.model_validate(snapshot)
