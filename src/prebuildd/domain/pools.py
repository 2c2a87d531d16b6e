"""The one validator of pool settings: instances, ttl, timezone and cron-hour schedules (pure).

The manifest import, ``presets set`` and the planner's schedules all check with these functions. A problem's
``reason`` is worded to follow the key it belongs to (``presets[small].prebuilds.ttl: must be ...``); a cron
problem also has a standalone ``sentence``, the words the planner reports when a stored schedule is unusable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from prebuildd.domain.parameters import format_number

if TYPE_CHECKING:  # schedules imports this module for its checks
    from prebuildd.domain.schedules import Schedule


class CronFault(StrEnum):
    FIELDS = "fields"
    MINUTE = "minute"
    INVALID = "invalid"


@dataclass(frozen=True)
class CronProblem:
    cron: str
    fault: CronFault
    detail: str = ""
    """Why cronsim refused it (``INVALID`` only)."""

    @property
    def reason(self) -> str:
        c = self.cron
        if self.fault is CronFault.FIELDS:
            return f"cron {c!r} must have 5 fields (minute hour day-of-month month day-of-week)"
        if self.fault is CronFault.MINUTE:
            return f"cron {c!r}: the minute field must be '*' (a schedule is a set of whole hours)"
        return f"invalid cron {c!r}: {self.detail}"

    @property
    def sentence(self) -> str:
        c = self.cron
        if self.fault is CronFault.FIELDS:
            return f"schedule {c!r}: expected 5 fields (minute hour day month weekday)"
        if self.fault is CronFault.MINUTE:
            return f"schedule {c!r}: the minute field must be '*' (schedules are sets of whole hours)"
        return f"schedule {c!r}: {self.detail}"


def check_cron(cron: str) -> CronProblem | None:
    """Five fields, minute ``*``, and a schedule cronsim accepts (no impossible dates)."""
    fields = cron.split()
    if len(fields) != 5:
        return CronProblem(cron, CronFault.FIELDS)
    if fields[0] != "*":
        return CronProblem(cron, CronFault.MINUTE)
    try:
        CronSim(cron, datetime(2000, 1, 1))
    except (CronSimError, ValueError, IndexError) as exc:
        return CronProblem(cron, CronFault.INVALID, str(exc))
    return None


MAX_INSTANCES = 1000
"""The largest pool one preset may ask for: far above any real pool, and far below what overflows a column or floods
the queue (a pool of a trillion was once accepted at push and killed daemons at import)."""

MAX_TTL_SECONDS = 365 * 24 * 3600
"""The longest ttl: a year. Longer is a typo (ms for s), and would overflow the stored seconds soon after."""


def instances_problem(instances: int) -> str | None:
    if instances < 0:
        return f"must be >= 0, got {instances}"
    if instances > MAX_INSTANCES:
        return f"must be at most {MAX_INSTANCES}, got {format_number(instances)}"
    return None


def ttl_problem(seconds: float) -> str | None:
    """A ttl is a whole number of seconds, 0 for none, at most a year."""
    if seconds < 0:
        return f"duration must not be negative, got {format_number(seconds)}"
    if not float(seconds).is_integer():
        return f"must be a whole number of seconds, got {format_number(seconds)}"
    if seconds > MAX_TTL_SECONDS:
        return f"must be at most 365d ({MAX_TTL_SECONDS} seconds), got {format_number(seconds)}"
    return None


def zone(timezone: str) -> ZoneInfo | None:
    """The IANA time zone of that name; None when there is none (or the name is not one, like a path)."""
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def timezone_problem(timezone: str) -> str | None:
    if zone(timezone) is None:
        return f"unknown time zone {timezone!r}: expected an IANA name like Europe/Paris"
    return None


@dataclass(frozen=True)
class PoolProblem:
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"


def pool_problems(
    *, instances: int | None, ttl_seconds: float, timezone: str, schedules: Sequence[Schedule] = ()
) -> list[PoolProblem]:
    """Every problem of a pool's settings, in the order of the keys (``instances`` None: no pool)."""
    found: list[PoolProblem] = []

    def add(key: str, reason: str | None) -> None:
        if reason is not None:
            found.append(PoolProblem(key, reason))

    add("instances", instances_problem(instances) if instances is not None else None)
    add("ttl", ttl_problem(ttl_seconds))
    add("timezone", timezone_problem(timezone))
    for i, schedule in enumerate(schedules):
        cron = check_cron(schedule.cron)
        add(f"schedules[{i}].cron", cron.reason if cron else None)
        add(f"schedules[{i}].instances", instances_problem(schedule.instances))
    return found
