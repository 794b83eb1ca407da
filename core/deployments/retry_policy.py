"""When a deployment run is tried again, and after how long. Pure: the worker does the waiting.

- a host was unreachable (or the connection failed): retried with exponential backoff and
  full jitter, up to ``max_attempts`` runs in all;
- a task failed: not retried, unless the request set ``retry_failed_tasks``;
- anything else (the playbook does not parse, a limit was exceeded, Ansible crashed): not
  retried, since running it again would end the same way.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass


class RunOutcome(enum.StrEnum):
    succeeded = "succeeded"
    unreachable = "unreachable"
    failed = "failed"
    error = "error"


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay: float = 0.0


def decide_retry(
    outcome: RunOutcome,
    *,
    run: int,
    max_attempts: int,
    backoff_seconds: float,
    retry_failed_tasks: bool,
    rng: random.Random | None = None,
) -> RetryDecision:
    """``run`` is the number of the run that just ended (1 for the first)."""
    retryable = outcome is RunOutcome.unreachable or (
        outcome is RunOutcome.failed and retry_failed_tasks
    )
    if not retryable or run >= max_attempts:
        return RetryDecision(retry=False)
    ceiling = backoff_seconds * 2 ** (run - 1)
    # Half fixed, half random: spreads retries of many jobs without ever retrying at once.
    delay = ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
    return RetryDecision(retry=True, delay=delay)
