"""The one circuit breaker around Redis calls the platform makes itself (publish, queue
depth, broker epoch, health pings). Open -> calls fail in under a millisecond instead of
waiting on timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import pybreaker
import structlog

from core.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")

STATES = (pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN)


@dataclass
class BreakerCounters:
    successes: int = 0
    failures: int = 0
    rejections: int = 0
    state_changes: int = 0
    opened_at: float | None = None
    last_error: str | None = None


class CountingListener(pybreaker.CircuitBreakerListener):
    """Logs every state change and keeps the counters shown at /health/circuit-breaker."""

    def __init__(self) -> None:
        self._counters = BreakerCounters()
        self._lock = threading.Lock()

    @property
    def counters(self) -> BreakerCounters:
        """A consistent copy."""
        with self._lock:
            return BreakerCounters(**asdict(self._counters))

    def success(self, cb: pybreaker.CircuitBreaker) -> None:
        with self._lock:
            self._counters.successes += 1

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        with self._lock:
            self._counters.failures += 1
            self._counters.last_error = f"{type(exc).__name__}: {exc}"[:500]

    def state_change(self, cb: pybreaker.CircuitBreaker, old: Any, new: Any) -> None:
        old_name = getattr(old, "name", None)
        if old_name == new.name:
            # Concurrent failures may each re-open an open breaker: not a change.
            return
        with self._lock:
            self._counters.state_changes += 1
            if new.name == pybreaker.STATE_OPEN:
                self._counters.opened_at = time.time()
            elif new.name == pybreaker.STATE_CLOSED:
                self._counters.opened_at = None
        log.warning("circuit_breaker.state_change", breaker=cb.name, old=old_name, new=new.name)

    def rejected(self) -> None:
        with self._lock:
            self._counters.rejections += 1


class RedisBreaker:
    """A pybreaker breaker plus its counters. One per process, built by the entrypoint."""

    def __init__(self, *, fail_max: int, reset_timeout: float, name: str = "redis") -> None:
        self.listener = CountingListener()
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max, reset_timeout=reset_timeout, name=name, listeners=[self.listener]
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisBreaker:
        return cls(fail_max=settings.breaker_fail_max, reset_timeout=settings.breaker_reset_timeout)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` through the breaker; raises pybreaker.CircuitBreakerError when open."""
        with self.guarded():
            return fn(*args, **kwargs)

    @contextmanager
    def guarded(self) -> Iterator[None]:
        """The block runs through the breaker (an ``await`` inside is fine: the async
        publisher's pipeline does that); raises pybreaker.CircuitBreakerError when open.

        ``CircuitBreaker.call`` holds the breaker's lock for the whole wrapped call, so one
        hung Redis call (a socket timeout) would queue every other thread's Redis call behind
        it. ``calling()`` decides admission and records the outcome under that lock but runs
        the body outside it (tests/unit/test_circuit_breaker.py pins this), so concurrent
        calls fail in parallel and the breaker opens after ``fail_max`` of them.
        """
        admitted = False
        try:
            with self.breaker.calling():
                admitted = True
                yield
        except pybreaker.CircuitBreakerError:
            if not admitted:  # refused without touching Redis; a tripping call is a failure
                self.listener.rejected()
            raise

    @property
    def state(self) -> str:
        return str(self.breaker.current_state)

    def snapshot(self) -> dict[str, Any]:
        counters = self.listener.counters
        return {
            "state": self.state,
            "failure_count": self.breaker.fail_counter,
            "fail_max": self.breaker.fail_max,
            "reset_timeout": self.breaker.reset_timeout,
            "opened_at": counters.opened_at,
            "last_error": counters.last_error,
            "successes": counters.successes,
            "failures": counters.failures,
            "rejections": counters.rejections,
            "state_changes": counters.state_changes,
        }
