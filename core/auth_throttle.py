"""Throttling failed authentications per client address.

Counts live in Redis (one key per address and fixed window, through the Redis breaker) so
every API process shares them; when Redis is down or the breaker is open, each process falls
back to its own counts (fail open to a per-process limit, never to no limit).

Cheap for well-behaved clients: an address with no failure in the current window, as far
as this process knows, is never looked up. Once an address failed here, every request from
it asks Redis for the shared count, so N processes let through at most N - 1 extra attempts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pybreaker
import redis
import structlog

from core.broker.breaker import RedisBreaker
from core.errors import RateLimited

log = structlog.get_logger(__name__)

KEY_PREFIX = "conveyor:auth-failures:"
# Addresses remembered per process; past this, counts of finished windows are forgotten.
MAX_TRACKED_ADDRESSES = 100_000
_REDIS_ERRORS = (redis.RedisError, pybreaker.CircuitBreakerError, OSError)


class AuthThrottle:
    def __init__(
        self,
        *,
        redis_client: redis.Redis,
        breaker: RedisBreaker,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis_client
        self.breaker = breaker
        self.limit = limit
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._local: dict[str, tuple[int, int]] = {}  # address -> (window, failures)

    def _window(self) -> tuple[int, float]:
        """The current window's number and the seconds until it ends."""
        now = self.clock()
        number = int(now // self.window)
        return number, (number + 1) * self.window - now

    def _key(self, address: str, window: int) -> str:
        return f"{KEY_PREFIX}{address}:{window}"

    def _local_count(self, address: str, window: int) -> int:
        with self._lock:
            seen_window, count = self._local.get(address, (window, 0))
        return count if seen_window == window else 0

    def might_limit(self, address: str) -> bool:
        """Whether ``check`` would look anything up (this process saw a failure from
        ``address`` in this window): async callers run ``check`` on a thread only then."""
        window, _ = self._window()
        return self._local_count(address, window) > 0

    def check(self, address: str) -> None:
        """Raise RateLimited when ``address`` used up its failures in this window."""
        window, remaining = self._window()
        local = self._local_count(address, window)
        if local == 0:
            return
        try:
            shared = self.breaker.call(self.redis.get, self._key(address, window))
            count = max(int(shared or 0), local)
        except _REDIS_ERRORS:
            count = local
        if count >= self.limit:
            raise RateLimited(retry_after=remaining)

    def record_failure(self, address: str) -> None:
        window, _ = self._window()
        with self._lock:
            if len(self._local) >= MAX_TRACKED_ADDRESSES:
                self._forget_finished(window)
            seen_window, count = self._local.get(address, (window, 0))
            self._local[address] = (window, count + 1 if seen_window == window else 1)
        key = self._key(address, window)

        def count_in_redis() -> None:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.expire(key, int(self.window * 2) + 1)
                pipe.execute()

        try:
            self.breaker.call(count_in_redis)
        except _REDIS_ERRORS as error:
            log.debug("auth_throttle.redis_unavailable", error=type(error).__name__)

    def _forget_finished(self, window: int) -> None:
        stale = [address for address, (seen, _) in self._local.items() if seen != window]
        for address in stale:
            del self._local[address]
        if len(self._local) >= MAX_TRACKED_ADDRESSES:  # all current: keep the newest half
            for address in list(self._local)[: MAX_TRACKED_ADDRESSES // 2]:
                del self._local[address]
