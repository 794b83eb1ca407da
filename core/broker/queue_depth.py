"""How many messages wait in each Celery queue on Redis, read through the breaker."""

from __future__ import annotations

from collections.abc import Sequence

import redis

from core.broker.breaker import RedisBreaker
from core.broker.task_names import QUEUES

# kombu's Redis transport keeps one list per queue and priority step: the queue's own name
# for priority 0 and "<queue>\x06\x16<step>" for the others (kombu/transport/redis.py).
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)


def queue_keys(queue: str) -> list[str]:
    return [
        queue if step == 0 else f"{queue}{KOMBU_PRIORITY_SEP}{step}"
        for step in KOMBU_PRIORITY_STEPS
    ]


def _read_depths(redis_client: redis.Redis, queues: Sequence[str]) -> dict[str, int]:
    pipe = redis_client.pipeline(transaction=False)
    for queue in queues:
        for key in queue_keys(queue):
            pipe.llen(key)
    lengths = iter(pipe.execute())
    return {queue: sum(int(next(lengths)) for _ in KOMBU_PRIORITY_STEPS) for queue in queues}


def queue_depths(
    redis_client: redis.Redis, breaker: RedisBreaker, queues: Sequence[str] = QUEUES
) -> dict[str, int | None]:
    """Messages waiting (not yet taken by a worker) per queue, in one round trip; None for
    every queue while Redis is unreachable or the breaker is open."""
    try:
        depths: dict[str, int | None] = dict(breaker.call(_read_depths, redis_client, queues))
    except Exception:  # RedisError, CircuitBreakerError: the breaker has counted and logged it
        return dict.fromkeys(queues)
    return depths
