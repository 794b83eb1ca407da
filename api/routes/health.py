"""/health/*: unauthenticated probes, like Kubernetes expects.

live: the process answers (no dependencies, so a database outage never restarts the pods).
ready: the database answers (503 otherwise); Redis down only *degrades* readiness, because
jobs are still accepted into the outbox and status is still served from PostgreSQL.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Breaker, RedisClient, Sessions
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


@router.get(
    "/ready",
    summary="Readiness",
    response_model=Ready,
    responses={503: {"model": NotReady, "description": "The database is unavailable."}},
)
def ready(sessions: Sessions, redis_client: RedisClient, breaker: Breaker) -> Ready | JSONResponse:
    checks = Checks(
        database=DatabaseCheck.model_validate(health.check_database(sessions)),
        redis=RedisCheck.model_validate(health.check_redis(redis_client, breaker)),
    )
    if checks.database.status == "down":
        return _not_ready(checks)
    try:
        outbox = Outbox.model_validate(health.outbox_status(sessions))
    except DatabaseUnavailable:  # went down between the two queries
        return _not_ready(checks)
    if checks.redis.status == "up":
        return Ready(
            status="ready",
            checks=checks,
            outbox=outbox,
            queues=queue_depths(redis_client, breaker),
        )
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
