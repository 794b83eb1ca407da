"""Redis clients with short timeouts and no hidden retries: a dead Redis costs milliseconds."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.settings import Settings


def make_redis(settings: Settings) -> redis.Redis:
    timeout = settings.redis_socket_timeout
    return redis.Redis.from_url(
        settings.broker_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
