"""Desired instances from cron-hour schedules: each schedule is a set of whole hours in the preset's timezone.

The minute field must be `*`, so `* 8-18 * * 1-5` means every minute from 08:00 to 18:59 on weekdays. The matching
schedule gives the target. When a schedule is invalid, or two of them cover a common hour anywhere in the week (an
overlap, as the reference reads it: not only when both match now), the preset falls back to its
`desired_instances` and the problem is reported, at push, at `presets set` and in status.

Overlaps are found on the hours of one week: exactly for schedules whose day-of-month and month are `*` (nearly
all), and over one leap year of hours for the others (every date and month, though not every pairing of a date
with a weekday). Each set of schedules is checked once per process (memoized), so a cycle pays nothing for it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cronsim import CronSim

from prebuildd.domain import pools


@dataclass(frozen=True)
class Schedule:
    cron: str
    instances: int


@dataclass(frozen=True)
class DesiredCount:
    instances: int
    schedule: Schedule | None = None
    """The schedule that set the target (None: desired_instances)."""
    problem: str | None = None


def cron_problem(cron: str) -> str | None:
    """What is wrong with a schedule's cron, in a sentence of its own (the checks are ``domain.pools``)."""
    problem = pools.check_cron(cron)
    return None if problem is None else problem.sentence


def _matches(cron: str, local: datetime) -> bool:
    minute = local.replace(second=0, microsecond=0, tzinfo=None)
    return next(CronSim(cron, minute - timedelta(minutes=1))) == minute


_WEEK_START = datetime(2024, 1, 1)  # a Monday
_YEAR_START = datetime(2028, 1, 1)  # a leap year
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _hours_matching(cron: str, start: datetime, hours: int) -> frozenset[int]:
    """The hours since ``start`` in which ``cron`` matches (its minute field is ``*``: a match is an hour)."""
    found: set[int] = set()
    end = start + timedelta(hours=hours)
    t = start - timedelta(minutes=1)
    while True:
        match = next(CronSim(cron, t), None)
        if match is None or match >= end:
            return frozenset(found)
        hour = int((match - start).total_seconds() // 3600)
        found.add(hour)
        t = start + timedelta(hours=hour + 1) - timedelta(minutes=1)  # on to the next hour


_DOW_NAMES = {name.lower(): i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}


def _expand(field: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int] | None:
    """The values of one plain cron field (``*``, numbers, names, ranges, steps, lists); None for anything else
    (``L``, ``#``, ``?``...), which the caller leaves to cronsim."""
    values: set[int] = set()
    for part in field.lower().split(","):
        base, _, step_text = part.partition("/")
        if step_text and not step_text.isdigit():
            return None
        step = int(step_text) if step_text else 1
        if base == "*":
            first, last = low, high
        else:
            ends = [names.get(e, e) if names else e for e in base.split("-")]
            if len(ends) > 2 or not all(isinstance(e, int) or e.isdigit() for e in ends):
                return None
            first = int(ends[0])
            last = int(ends[-1]) if len(ends) == 2 or step_text else first
            if len(ends) == 1 and step_text:
                last = high
        if step < 1 or not low <= first <= last <= high:
            return None
        values.update(range(first, last + 1, step))
    return values


def _week_hours(cron: str) -> frozenset[int]:
    """The hours of a week from Monday 00:00 in which a schedule with day-of-month and month ``*`` matches."""
    fields = cron.split()
    hours = _expand(fields[1], 0, 23)
    days = _expand(fields[4], 0, 7, _DOW_NAMES)
    if hours is None or days is None:
        return _hours_matching(cron, _WEEK_START, 7 * 24)
    mondays_first = {(d - 1) % 7 for d in days}  # cron: 0 and 7 are Sunday; here 0 is Monday
    return frozenset(day * 24 + hour for day in mondays_first for hour in hours)


def overlap(crons: Sequence[str]) -> str | None:
    """The first overlap of two schedules (their crons) anywhere in the week, described; None when none overlap
    (or when one is invalid: that is reported on its own)."""
    return _overlap(tuple(crons))


@functools.lru_cache(maxsize=8192)
def _overlap(crons: tuple[str, ...]) -> str | None:
    if len(crons) < 2 or any(cron_problem(c) is not None for c in crons):
        return None
    weekly = all(c.split()[2] == "*" and c.split()[3] == "*" for c in crons)
    if weekly:
        start, covered = _WEEK_START, [_week_hours(c) for c in crons]
    else:
        start, covered = _YEAR_START, [_hours_matching(c, _YEAR_START, 366 * 24) for c in crons]
    for i, first in enumerate(covered):
        for j in range(i + 1, len(covered)):
            common = first & covered[j]
            if common:
                at = start + timedelta(hours=min(common))
                when = f"{_DAYS[at.weekday()]} {at:%H}:00" if weekly else f"{at:%b %d} {at:%H}:00"
                return f"schedules {crons[i]!r} and {crons[j]!r} overlap (both cover {when}): using instances"
    return None


def desired_at(now: datetime, timezone: str, schedules: Sequence[Schedule], default: int) -> DesiredCount:
    if not schedules:
        return DesiredCount(default)
    zone = pools.zone(timezone)
    if zone is None:
        return DesiredCount(
            default, problem=f"timezone: {pools.timezone_problem(timezone)}; schedules ignored"
        )
    for schedule in schedules:
        problem = cron_problem(schedule.cron)
        if problem is not None:
            return DesiredCount(default, problem=f"{problem}; schedules ignored")
    overlapping = overlap([s.cron for s in schedules])
    if overlapping is not None:
        return DesiredCount(default, problem=overlapping)
    local = now.astimezone(zone)
    for schedule in schedules:
        if _matches(schedule.cron, local):
            return DesiredCount(schedule.instances, schedule=schedule)
    return DesiredCount(default)
