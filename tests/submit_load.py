"""Steady submit load over HTTP with per-request latency, for fault tests and benchmarks."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

NOOP: dict[str, Any] = {"kind": "noop", "params": {}}


@dataclass(frozen=True)
class Submitted:
    job_id: str | None
    status: int
    seconds: float


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with ``fraction`` of values at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def submit_steadily(
    api: httpx.Client,
    *,
    count: int,
    rate: float,
    clients: int = 4,
    body: dict[str, Any] | None = None,
) -> list[Submitted]:
    """``count`` POST /v1/jobs at ``rate`` per second in all, spread over ``clients`` threads,
    each with its own connection (opened before the clock starts) and ``api``'s headers."""
    start = time.perf_counter() + 0.1
    results: list[Submitted] = []
    lock = threading.Lock()

    def client_loop(index: int) -> None:
        with httpx.Client(base_url=api.base_url, headers=api.headers, timeout=30) as client:
            client.get("/health/live")
            for n in range(index, count, clients):
                time.sleep(max(0.0, start + n / rate - time.perf_counter()))
                started = time.perf_counter()
                response = client.post("/v1/jobs", json=body or NOOP)
                elapsed = time.perf_counter() - started
                job_id = response.json().get("id")
                with lock:
                    results.append(Submitted(job_id, response.status_code, elapsed))

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert len(results) == count, "a submitting client died"
    return results
