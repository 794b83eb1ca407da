"""Shapes of /v1/schedules: a schedule as created, changed and shown, and its firings."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.models import Schedule
from core.schedules.store import Firing
from core.schedules.template import JobTemplate

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
CatchUp = Literal["skip", "latest", "all"]
Overlap = Literal["skip", "allow"]


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "nightly",
                    "cron": "30 2 * * *",
                    "timezone": "Europe/Berlin",
                    "job": {
                        "kind": "import",
                        "importer": "products",
                        "inbox_pattern": "products-*.csv",
                    },
                    "catch_up": "latest",
                    "overlap": "skip",
                }
            ]
        },
    )

    name: str = Field(pattern=NAME_PATTERN)
    cron: str | None = Field(
        default=None, max_length=200, description="Five fields, in `timezone`'s wall time."
    )
    interval_seconds: float | None = Field(default=None, description="Instead of cron.")
    timezone: str = Field(default="UTC", max_length=64, description="IANA name.")
    job: JobTemplate
    catch_up: CatchUp = Field(
        default="skip",
        description="Firings missed while nothing ran: skip them, fire the latest, or all.",
    )
    overlap: Overlap = Field(
        default="skip", description="skip: no firing while the previous job is still active."
    )
    owner: uuid.UUID | None = Field(
        default=None, description="API key id the jobs run as (default: yours; others: admin)."
    )
    paused: bool = False


class ScheduleUpdate(BaseModel):
    """Only the fields given change. A new cron replaces an interval and vice versa."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    cron: str | None = Field(default=None, max_length=200)
    interval_seconds: float | None = None
    timezone: str | None = Field(default=None, max_length=64)
    job: JobTemplate | None = None
    catch_up: CatchUp | None = None
    overlap: Overlap | None = None
    owner: uuid.UUID | None = None


class ScheduleOut(BaseModel):
    id: uuid.UUID
    name: str
    cron: str | None
    interval_seconds: float | None
    timezone: str
    job: dict[str, Any]
    owner: uuid.UUID
    catch_up: CatchUp
    overlap: Overlap
    paused: bool
    next_fire_at: datetime
    last_fired_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_schedule(cls, schedule: Schedule) -> ScheduleOut:
        return cls(
            id=schedule.id,
            name=schedule.name,
            cron=schedule.cron,
            interval_seconds=schedule.interval_seconds,
            timezone=schedule.timezone,
            job=schedule.job,
            owner=schedule.owner_id,
            catch_up=schedule.catch_up,
            overlap=schedule.overlap,
            paused=schedule.paused,
            next_fire_at=schedule.next_fire_at,
            last_fired_at=schedule.last_fired_at,
            created_at=schedule.created_at,
            updated_at=schedule.updated_at,
        )


class ScheduleList(BaseModel):
    items: list[ScheduleOut]


FiringStatus = Literal[
    "created", "skipped_overlap", "skipped_no_input", "skipped_catch_up", "failed"
]


class FiringOut(BaseModel):
    fire_time: datetime
    job_id: uuid.UUID | None = Field(description="The job it created (the first, for imports).")
    job_ids: list[uuid.UUID] = Field(description="Every job it created (one per inbox file).")
    status: FiringStatus
    detail: dict[str, Any]
    decided_at: datetime

    @classmethod
    def from_firing(cls, firing: Firing) -> FiringOut:
        return cls(
            fire_time=firing.fire_time,
            job_id=firing.job_id,
            job_ids=firing.job_ids,
            status=firing.status,
            detail=firing.detail,
            decided_at=firing.decided_at,
        )


class FiringPage(BaseModel):
    items: list[FiringOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for older firings.")
