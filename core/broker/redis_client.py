"""Redis clients with short timeouts and no hidden retries: a dead Redis costs milliseconds.

Plain: one server from ``redis_url``. With Sentinel (``redis_sentinels``): a client whose
connections find the current master of ``redis_master_name`` through the Sentinels, so after
a failover the next connection goes to the promoted replica without a restart. Either way,
calls go through the caller's circuit breaker.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from core.settings import Settings


def _timeouts(settings: Settings) -> dict[str, Any]:
    timeout = settings.redis_socket_timeout
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout}


def master_credentials(settings: Settings) -> dict[str, Any]:
    """Database number and credentials of the master, from ``redis_url``."""
    url = urlsplit(settings.redis_url_with_credentials)
    path = url.path.strip("/")
    return {
        "db": int(path) if path.isdigit() else 0,
        "username": unquote(url.username) if url.username else None,
        "password": unquote(url.password) if url.password else None,
    }


def sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    """How to talk to the Sentinels themselves (they may have their own password)."""
    password = settings.redis_sentinel_password
    secret = {"password": password.get_secret_value()} if password else {}
    return {**_timeouts(settings), **secret}


def make_redis(settings: Settings) -> redis.Redis:
    no_retry = {"retry": Retry(NoBackoff(), 0), "health_check_interval": 0}
    if not settings.sentinel_addresses:
        return redis.Redis.from_url(
            settings.redis_url_with_credentials, **_timeouts(settings), **no_retry
        )
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        settings.sentinel_addresses,
        sentinel_kwargs=sentinel_kwargs(settings),
        **_timeouts(settings),
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        settings.redis_master_name, **master_credentials(settings), **no_retry
    )
    return client


def make_async_redis(settings: Settings) -> redis.asyncio.Redis:
    """``make_redis`` for the event loop (the API's dispatcher): same timeouts, no retries,
    Sentinel-aware."""
    no_retry: dict[str, Any] = {"retry": AsyncRetry(NoBackoff(), 0), "health_check_interval": 0}
    if not settings.sentinel_addresses:
        return redis.asyncio.Redis.from_url(
            settings.redis_url_with_credentials, **_timeouts(settings), **no_retry
        )
    sentinel = AsyncSentinel(  # type: ignore[no-untyped-call]
        settings.sentinel_addresses,
        sentinel_kwargs=sentinel_kwargs(settings),
        **_timeouts(settings),
    )
    client: redis.asyncio.Redis = sentinel.master_for(
        settings.redis_master_name, **master_credentials(settings), **no_retry
    )
    return client
