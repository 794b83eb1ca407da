"""When schedules fire, for fixed dates: DST changes in Europe/Berlin (2026-03-29 spring
forward, 2026-10-25 fall back), intervals, and what cron expressions are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.schedules.timing import Timing, check_cron, zone

BERLIN = "Europe/Berlin"
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


def fire_times(cron: str, start: datetime, end: datetime, tz: str = BERLIN) -> list[datetime]:
    return list(Timing(cron, None, tz, ANCHOR).times_between(start, end))


def local(times: list[datetime], tz: str = BERLIN) -> list[str]:
    return [t.astimezone(zone(tz)).strftime("%m-%d %H:%M %Z") for t in times]


def test_daily_0230_fires_once_on_the_spring_forward_day_shifted_past_the_gap() -> None:
    times = fire_times(
        "30 2 * * *", datetime(2026, 3, 27, 12, tzinfo=UTC), datetime(2026, 3, 31, 12, tzinfo=UTC)
    )
    # 02:30 does not exist on 03-29 (02:00 -> 03:00): it fires once, at 03:30 CEST.
    assert local(times) == [
        "03-28 02:30 CET",
        "03-29 03:30 CEST",
        "03-30 02:30 CEST",
        "03-31 02:30 CEST",
    ]
    assert times[1] == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_daily_0230_fires_once_on_the_fall_back_day() -> None:
    times = fire_times(
        "30 2 * * *", datetime(2026, 10, 23, 12, tzinfo=UTC), datetime(2026, 10, 27, 12, tzinfo=UTC)
    )
    # 02:30 happens twice on 10-25 (03:00 CEST -> 02:00 CET): only the first fires.
    assert local(times) == [
        "10-24 02:30 CEST",
        "10-25 02:30 CEST",
        "10-26 02:30 CET",
        "10-27 02:30 CET",
    ]
    assert times[1] == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_hourly_schedule_never_fires_twice_at_one_instant_around_the_gap() -> None:
    times = fire_times(
        "30 * * * *", datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 29, 3, tzinfo=UTC)
    )
    assert len(times) == len(set(times))
    assert times == sorted(times)
    # 00:30 CET, 01:30 CET, then 02:30 (shifted to 03:30 CEST) and 03:30 CEST are one instant.
    assert local(times) == [
        "03-29 00:30 CET",
        "03-29 01:30 CET",
        "03-29 03:30 CEST",
        "03-29 04:30 CEST",
    ]


def test_hourly_schedule_fires_the_repeated_hour_once() -> None:
    times = fire_times(
        "30 * * * *", datetime(2026, 10, 24, 23, tzinfo=UTC), datetime(2026, 10, 25, 3, tzinfo=UTC)
    )
    assert [t.strftime("%H:%M") for t in times] == ["23:30", "00:30", "02:30"]


def test_utc_schedule_ignores_berlin_dst() -> None:
    times = fire_times(
        "30 2 * * *",
        datetime(2026, 3, 28, tzinfo=UTC),
        datetime(2026, 3, 30, 12, tzinfo=UTC),
        "UTC",
    )
    assert [t.hour for t in times] == [2, 2, 2]


def test_interval_fires_on_the_anchor_grid() -> None:
    timing = Timing(None, 10, "UTC", ANCHOR)
    assert timing.next_after(ANCHOR) == ANCHOR + timedelta(seconds=10)
    assert timing.next_after(ANCHOR + timedelta(seconds=25)) == ANCHOR + timedelta(seconds=30)
    times = list(timing.times_between(ANCHOR, ANCHOR + timedelta(minutes=3)))
    assert len(times) == 19  # 0, 10, ..., 180
    assert timing.period_at(times[3]) == 10


@pytest.mark.parametrize(
    "expression", ["* * * *", "61 * * * *", "0 0 30 2 *", "@reboot", "0 0 * * * *", "x y z a b"]
)
def test_refused_cron_expressions(expression: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        check_cron(expression)


def test_cron_is_normalised() -> None:
    assert check_cron(" 30  2 * * 1-5 ") == "30 2 * * 1-5"


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc/passwd", "/etc/localtime", ""])
def test_unknown_time_zones_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="time zone"):
        zone(name)
