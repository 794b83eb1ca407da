"""The Redis breaker: counts, rejections, state changes, and concurrent calls that are not
serialized behind one slow call (pybreaker's own ``call`` holds a lock around the call)."""

from __future__ import annotations

import contextlib
import threading
import time

import pybreaker
import pytest

from core.broker.breaker import RedisBreaker


def fail() -> None:
    raise ConnectionError("refused")


def test_opens_after_fail_max_then_rejects_without_calling() -> None:
    breaker = RedisBreaker(fail_max=3, reset_timeout=60)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(fail)
    with pytest.raises(pybreaker.CircuitBreakerError) as tripped:
        breaker.call(fail)
    assert isinstance(tripped.value.__context__, ConnectionError)

    calls: list[int] = []
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.call(calls.append, 1)
    assert calls == []

    snapshot = breaker.snapshot()
    assert snapshot["state"] == "open"
    assert snapshot["failures"] == 3  # the tripping call is a failure, not a rejection
    assert snapshot["rejections"] == 1
    assert snapshot["state_changes"] == 1
    assert snapshot["opened_at"] is not None
    assert snapshot["last_error"] == "ConnectionError: refused"


def test_half_open_trial_closes_it() -> None:
    breaker = RedisBreaker(fail_max=1, reset_timeout=0.1)
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.call(fail)
    time.sleep(0.15)
    assert breaker.call(lambda: 42) == 42
    snapshot = breaker.snapshot()
    assert snapshot["state"] == "closed"
    assert snapshot["opened_at"] is None
    assert snapshot["state_changes"] == 3  # closed -> open -> half-open -> closed
    assert snapshot["successes"] == 1


def test_concurrent_calls_run_in_parallel() -> None:
    breaker = RedisBreaker(fail_max=5, reset_timeout=60)
    threads = [threading.Thread(target=breaker.call, args=(time.sleep, 0.3)) for _ in range(4)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.perf_counter() - started < 0.6  # serialized would be 1.2 s
    assert breaker.snapshot()["successes"] == 4


def test_concurrent_failures_open_it_once() -> None:
    breaker = RedisBreaker(fail_max=2, reset_timeout=60)
    barrier = threading.Barrier(6)

    def slow_fail() -> None:
        barrier.wait(5)
        time.sleep(0.05)
        fail()

    def run() -> None:
        with contextlib.suppress(ConnectionError, pybreaker.CircuitBreakerError):
            breaker.call(slow_fail)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = breaker.snapshot()
    assert snapshot["state"] == "open"
    assert snapshot["failures"] == 6
    assert snapshot["state_changes"] == 1
