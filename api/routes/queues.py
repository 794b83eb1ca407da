"""/v1/queues: what each queue holds, and pausing it for maintenance (operator role)."""

from __future__ import annotations

from typing import Annotated

import redis
from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from api.deps import Breaker, CeleryControl, OperatorPrincipal, RedisClient, Sessions
from api.schemas.problems import problem_responses
from api.schemas.queues import QueueAction, QueueList, QueueOut
from core import db
from core.broker.breaker import RedisBreaker
from core.queues import control, overview

router = APIRouter(prefix="/v1/queues", tags=["queues"], responses=problem_responses(401, 403, 503))

QueueName = Annotated[str, Path(max_length=100, description="default, imports or deployments")]


def _overview(
    sessions: db.Sessions,
    redis_client: redis.Redis,
    breaker: RedisBreaker,
    workers: dict[str, list[str]] | None,
) -> list[overview.QueueInfo]:
    with db.transaction(sessions) as session:
        return overview.overview(session, redis_client, breaker, workers)


@router.get("", summary="Queues: depth, running, oldest waiting age, paused, workers")
async def list_queues(
    sessions: Sessions,
    redis_client: RedisClient,
    breaker: Breaker,
    celery: CeleryControl,
    _: OperatorPrincipal,
) -> QueueList:
    # Asking the workers waits up to its timeout: on a thread, like the database work.
    workers = await run_in_threadpool(overview.consumers, celery)
    infos = await run_in_threadpool(_overview, sessions, redis_client, breaker, workers)
    return QueueList(items=[QueueOut.from_info(info) for info in infos])


def _one(
    sessions: db.Sessions, redis_client: redis.Redis, breaker: RedisBreaker, name: str
) -> QueueOut:
    infos = _overview(sessions, redis_client, breaker, None)
    return next(QueueOut.from_info(info) for info in infos if info.name == name)


@router.post(
    "/{name}/pause",
    summary="Pause a queue",
    description="Its jobs are accepted and wait (waiting_reason queue_paused); workers stop "
    "taking them without a restart; running jobs finish.",
    responses=problem_responses(404),
)
def pause_queue(
    name: QueueName,
    sessions: Sessions,
    redis_client: RedisClient,
    breaker: Breaker,
    principal: OperatorPrincipal,
) -> QueueAction:
    with db.transaction(sessions) as session:
        held = control.pause(session, name=name, principal_id=principal.id)
    return QueueAction(queue=_one(sessions, redis_client, breaker, name), jobs_affected=held)


@router.post(
    "/{name}/resume",
    summary="Resume a queue",
    description="Its waiting jobs are published again.",
    responses=problem_responses(404),
)
def resume_queue(
    name: QueueName,
    sessions: Sessions,
    redis_client: RedisClient,
    breaker: Breaker,
    _: OperatorPrincipal,
) -> QueueAction:
    with db.transaction(sessions) as session:
        released = control.resume(session, name=name)
    return QueueAction(queue=_one(sessions, redis_client, breaker, name), jobs_affected=released)
