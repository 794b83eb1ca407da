"""When a schedule fires: pure functions of its cron expression or interval, time zone and
anchor. No I/O; the tick (core.schedules.tick) and the API use them.

Cron expressions are evaluated by croniter in the schedule's *local wall time* and then
converted to UTC with zoneinfo, so "30 2 * * *" in Europe/Berlin means 02:30 on the clock
on the wall, every day, DST or not:

- On the spring-forward day 02:30 does not exist. zoneinfo reads a non-existent wall time
  with the offset in force before the gap (fold=0), i.e. it fires at 03:30 local
  (01:30 UTC), once.
- On the fall-back day 02:30 happens twice. Only the first (fold=0, summer time) fires:
  the next wall time croniter gives is a day later.
- Several wall times may map to the same instant around a gap (an hourly schedule's 02:30
  and 03:30 on the spring-forward day); fire times are strictly increasing instants, so the
  second is dropped instead of firing twice.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, croniter

# A cron expression with no fire time in this many years is refused (e.g. "0 0 30 2 *").
MAX_SEARCH_YEARS = 5
# How far a wall time's instant can be out of step with the wall clock around a DST change.
_WALL_CLOCK_SLACK = timedelta(hours=3)


@dataclass(frozen=True)
class Timing:
    cron: str | None
    interval_seconds: float | None
    timezone: str
    anchor: datetime  # interval schedules fire at anchor + k * interval

    def next_after(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (aware, UTC)."""
        if self.interval_seconds is not None:
            return _next_interval(self.anchor, self.interval_seconds, after)
        assert self.cron is not None
        return _next_cron(self.cron, zone(self.timezone), after)

    def times_between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Fire times ``t`` with ``start <= t <= end``, in order."""
        current = self.next_after(start - timedelta(microseconds=1))
        while current <= end:
            yield current
            current = self.next_after(current)

    def latest_between(self, start: datetime, end: datetime, count: int) -> list[datetime]:
        """The last ``count`` fire times ``t`` with ``start <= t <= end``, in order: the tail
        of ``times_between(start, end)``, without walking the fire times before it (a 1 s
        schedule down for a week has 600 000). The walk starts a little before the
        ``count``-th last fire time; should it find fewer than ``count`` (fire times
        dropped at a DST change), it starts further back, at worst from ``start``."""
        if count <= 0:
            return []
        lookback, begin = count, end
        while True:
            earlier = max(start, self._before_last(start, end, lookback))
            # Not further back than last time (an interval's anchor): there is nothing
            # before it, so walking from start finds the same, and ends the search.
            begin = earlier if earlier < begin else start
            recent = deque(self.times_between(begin, end), maxlen=count)
            if len(recent) == count or begin <= start:
                return list(recent)
            lookback *= 2

    def _before_last(self, start: datetime, end: datetime, count: int) -> datetime:
        """An instant at or before (normally) the ``count``-th last fire time up to
        ``end``; ``start`` when there are fewer after ``start``."""
        if self.interval_seconds is not None:
            elapsed = (end - self.anchor).total_seconds()
            steps = max(0, math.floor(elapsed / self.interval_seconds) - count)
            return self.anchor + timedelta(seconds=steps * self.interval_seconds)
        assert self.cron is not None
        return _cron_before_last(self.cron, zone(self.timezone), start, end, count)

    def period_at(self, fire_time: datetime) -> float:
        """Seconds from ``fire_time`` to the next fire time."""
        return (self.next_after(fire_time) - fire_time).total_seconds()


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError for anything else (no local files, no paths)."""
    if name not in _zone_names():
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {name!r}") from error


_ZONES: frozenset[str] = frozenset()


def _zone_names() -> frozenset[str]:
    global _ZONES
    if not _ZONES:
        _ZONES = frozenset(available_timezones()) | {"UTC"}
    return _ZONES


def check_cron(expression: str) -> str:
    """A five-field cron expression croniter accepts and that fires at all; ValueError
    otherwise. Returned with its whitespace normalised."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError("a cron expression has five fields: minute hour day month weekday")
    normalised = " ".join(fields)
    try:
        valid = croniter.is_valid(normalised)
    except Exception:  # croniter's parser may raise more than it documents on odd input
        valid = False
    if not valid:
        raise ValueError(f"invalid cron expression {expression!r}")
    try:
        _next_cron(normalised, ZoneInfo("UTC"), datetime(2000, 1, 1, tzinfo=UTC))
    except Exception as error:  # CroniterBadDateError (a ValueError) for "never"
        raise ValueError(f"cron expression {expression!r} never fires") from error
    return normalised


def _next_interval(anchor: datetime, interval: float, after: datetime) -> datetime:
    elapsed = (after - anchor).total_seconds()
    steps = max(0, math.floor(elapsed / interval) + 1)
    candidate = anchor + timedelta(seconds=steps * interval)
    # Float rounding may land on or before ``after``: step once more.
    while candidate <= after:
        candidate += timedelta(seconds=interval)
    return candidate


def _cron_before_last(
    expression: str, tz: ZoneInfo, start: datetime, end: datetime, count: int
) -> datetime:
    """Walk wall times back from ``end`` until ``count`` of them fall at or before it."""
    local = end.astimezone(tz).replace(tzinfo=None, microsecond=0)
    # Start a little after the wall time of ``end``: in a repeated hour a wall time still
    # ahead may already be past as an instant (the converse of _next_cron's head start).
    iterator = croniter(expression, local + _WALL_CLOCK_SLACK, max_years_between_matches=10)
    seen = 0
    while seen < count:
        try:
            wall: datetime = iterator.get_prev(datetime)
        except CroniterBadDateError:  # nothing earlier for years: walk from start
            return start
        instant = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if instant < start:
            return start
        if instant <= end:
            seen += 1
    return instant


def _next_cron(expression: str, tz: ZoneInfo, after: datetime) -> datetime:
    """Iterate in naive local wall time, convert each wall time to UTC, return the first
    instant after ``after``."""
    local = after.astimezone(tz).replace(tzinfo=None, microsecond=0)
    # Start a little before the wall time of ``after``: in a repeated hour the wall clock
    # goes backwards, and a wall time already passed may still be ahead as an instant.
    iterator = croniter(expression, local - _WALL_CLOCK_SLACK, max_years_between_matches=10)
    limit = after + timedelta(days=366 * MAX_SEARCH_YEARS)
    while True:
        wall: datetime = iterator.get_next(datetime)
        instant = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if instant > after:
            return instant
        if instant > limit:  # pragma: no cover - croniter raises first
            raise ValueError("no fire time")
