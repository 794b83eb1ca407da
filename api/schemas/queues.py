"""Shapes of /v1/queues."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from core.queues.overview import QueueInfo


class QueueOut(BaseModel):
    name: str
    depth: int = Field(description="Queued jobs (waiting for a worker, held or not).")
    running: int
    oldest_waiting_seconds: float | None = Field(description="Age of the oldest queued job.")
    broker_depth: int | None = Field(description="Messages in Redis; null if unreachable.")
    paused: bool
    paused_at: datetime | None
    workers: list[str] | None = Field(
        description="Workers consuming the queue; null when they could not be asked."
    )

    @classmethod
    def from_info(cls, info: QueueInfo) -> QueueOut:
        return cls(**info.__dict__)


class QueueList(BaseModel):
    items: list[QueueOut]


class QueueAction(BaseModel):
    queue: QueueOut
    jobs_affected: int = Field(
        description="pause: unpublished jobs now held; resume: held jobs put back."
    )
