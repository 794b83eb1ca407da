"""Finding a schedule's most recent due fire times (Timing.latest_between, used by the
tick's catch-up): the same fire times as walking the whole window, at a cost set by how
many are wanted, not by how long the schedule was down."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from croniter import croniter

from core.models import Schedule
from core.schedules import timing as timing_module
from core.schedules.tick import MAX_SKIPPED_RECORDED, _recent_due
from core.schedules.timing import Timing

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
# Around DST changes: Berlin (spring forward, fall back), New York, Lord Howe (30 minutes).
ENDS = [
    datetime(2026, 3, 29, 1, 20, tzinfo=UTC),
    datetime(2026, 3, 29, 3, tzinfo=UTC),
    datetime(2026, 10, 25, 1, 10, tzinfo=UTC),
    datetime(2026, 3, 8, 7, 30, tzinfo=UTC),
    datetime(2026, 11, 1, 6, 10, tzinfo=UTC),
    datetime(2026, 4, 4, 15, 20, tzinfo=UTC),
]


@pytest.mark.parametrize(
    ("cron", "tz"),
    [
        ("*/10 * * * *", "Europe/Berlin"),
        ("30 2 * * *", "Europe/Berlin"),
        ("0,15,45 1-3 * * *", "Europe/Berlin"),
        ("*/20 * * * *", "America/New_York"),
        ("*/15 * * * *", "Australia/Lord_Howe"),
    ],
)
def test_the_latest_fire_times_are_the_tail_of_the_whole_walk(cron: str, tz: str) -> None:
    timing = Timing(cron, None, tz, ANCHOR)
    for end in ENDS:
        for hours in (0.5, 5):
            start = end - timedelta(hours=hours)
            walked = list(timing.times_between(start, end))
            for count in (1, 3, 101):
                assert timing.latest_between(start, end, count) == walked[-count:], (end, hours)


@pytest.mark.parametrize("interval", [1.0, 0.7, 3600.0])
def test_interval_latest_fire_times_are_the_tail_of_the_whole_walk(interval: float) -> None:
    timing = Timing(None, interval, "UTC", ANCHOR + timedelta(microseconds=300_000))
    end = ANCHOR + timedelta(hours=5, seconds=7)
    for start in (ANCHOR - timedelta(hours=1), end - timedelta(seconds=30), end):
        walked = list(timing.times_between(start, end))
        for count in (1, 2, 101):
            assert timing.latest_between(start, end, count) == walked[-count:]


@dataclass(frozen=True)
class CountingTiming(Timing):
    """A Timing that counts the fire times it is asked for."""

    asked: list[datetime] = field(default_factory=list)

    def next_after(self, after: datetime) -> datetime:
        self.asked.append(after)
        return super().next_after(after)


def due_schedule(timing: Timing, behind: timedelta, now: datetime) -> Schedule:
    return Schedule(
        id=uuid.uuid4(),
        cron=timing.cron,
        interval_seconds=timing.interval_seconds,
        timezone=timing.timezone,
        anchor_at=timing.anchor,
        next_fire_at=now - behind,
    )


def test_a_1s_schedule_30_days_behind_asks_for_about_a_hundred_fire_times() -> None:
    now = ANCHOR + timedelta(days=31, microseconds=250_000)
    timing = CountingTiming(None, 1.0, "UTC", ANCHOR)
    due = _recent_due(due_schedule(timing, timedelta(days=30), now), timing, now)
    assert len(due) == MAX_SKIPPED_RECORDED + 1
    assert due[-1] == ANCHOR + timedelta(days=31)
    assert due[0] == due[-1] - timedelta(seconds=MAX_SKIPPED_RECORDED)
    # Walking the tick's 8-day window would ask for 691 200 fire times.
    assert len(timing.asked) <= 2 * (MAX_SKIPPED_RECORDED + 2)


class CountingCroniter(croniter):  # type: ignore[misc]
    """croniter, counting the wall times it steps through."""

    steps = 0

    def get_next(self, *args: Any, **kwargs: Any) -> Any:
        CountingCroniter.steps += 1
        return super().get_next(*args, **kwargs)

    def get_prev(self, *args: Any, **kwargs: Any) -> Any:
        CountingCroniter.steps += 1
        return super().get_prev(*args, **kwargs)


def test_a_minutely_cron_30_days_behind_steps_through_hours_not_days(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(timing_module, "croniter", CountingCroniter)
    CountingCroniter.steps = 0
    now = datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)
    timing = CountingTiming("* * * * *", None, "Europe/Berlin", ANCHOR)
    due = _recent_due(due_schedule(timing, timedelta(days=30), now), timing, now)
    assert len(due) == MAX_SKIPPED_RECORDED + 1
    assert due[-1] == datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert len(timing.asked) <= MAX_SKIPPED_RECORDED + 2
    # Each fire time costs _next_cron's three-hour head start (180 steps); walking the
    # 8-day window fire time by fire time would take some two million.
    assert CountingCroniter.steps <= (MAX_SKIPPED_RECORDED + 2) * 200 + 400
