"""Shapes of /health/*: probes for orchestrators and operators."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

CheckStatus = Literal["up", "down"]


class Live(BaseModel):
    status: Literal["ok"] = "ok"


class DatabaseCheck(BaseModel):
    status: CheckStatus
    latency_ms: float
    error: str | None = Field(default=None, description="Error type when down.")


class RedisCheck(BaseModel):
    status: CheckStatus
    latency_ms: float
    breaker: str = Field(description="Circuit breaker state: closed, open or half-open.")
    error: str | None = Field(default=None, description="Error type when down.")


class Checks(BaseModel):
    database: DatabaseCheck
    redis: RedisCheck


class Outbox(BaseModel):
    undispatched: int = Field(description="Jobs committed but not yet published to Redis.")
    oldest_age_seconds: float | None


class Ready(BaseModel):
    status: Literal["ready", "degraded"] = Field(
        description="degraded: Redis is down; jobs are accepted and wait in the outbox."
    )
    detail: str | None = Field(default=None, description="What is degraded, when it is.")
    checks: Checks
    outbox: Outbox
    queues: dict[str, int | None] = Field(
        description="Messages waiting per Celery queue on Redis; null while Redis is down."
    )


class NotReady(BaseModel):
    status: Literal["unavailable"] = "unavailable"
    code: str
    message: str
    checks: Checks
    outbox: Outbox | None = None


class BreakerSnapshot(BaseModel):
    state: str
    failure_count: int
    fail_max: int
    reset_timeout: float
    opened_at: float | None
    last_error: str | None
    successes: int
    failures: int
    rejections: int
    state_changes: int
