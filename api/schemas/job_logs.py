"""Shapes of /v1/jobs/{id}/logs: a job's log lines (a deployment's Ansible events)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from core.models import JobLog


class LogLineOut(BaseModel):
    id: int = Field(description="Increasing; resume after it (?after=, SSE Last-Event-ID).")
    at: datetime
    attempt: int
    event: str = Field(description="Ansible's event name, or `conveyor` for the worker's own.")
    host: str | None
    task: str | None
    line: str = Field(description="The output, as ansible-playbook prints it (redacted).")
    data: dict[str, Any]

    @classmethod
    def of(cls, row: JobLog) -> LogLineOut:
        return cls(
            id=row.id,
            at=row.at,
            attempt=row.attempt,
            event=row.event,
            host=row.host,
            task=row.task,
            line=row.line,
            data=row.data,
        )


class LogPage(BaseModel):
    items: list[LogLineOut]
    next_after: int = Field(description="Pass as ?after= for the lines that follow.")
