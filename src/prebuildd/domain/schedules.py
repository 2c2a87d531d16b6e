"""Desired instances from cron-hour schedules: each schedule is a set of whole hours in the preset's timezone.

The minute field must be `*`, so `* 8-18 * * 1-5` means every minute from 08:00 to 18:59 on weekdays. The first
matching schedule gives the target; when a schedule is invalid, or more than one matches at once (an overlap),
the preset falls back to its `desired_instances` and the problem is reported.
"""

from __future__ import annotations

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
    local = now.astimezone(zone)
    matching = [s for s in schedules if _matches(s.cron, local)]
    if len(matching) > 1:
        crons = ", ".join(repr(s.cron) for s in matching)
        return DesiredCount(
            default, problem=f"overlapping schedules {crons} at {local:%a %H:%M}: using desired_instances"
        )
    if matching:
        return DesiredCount(matching[0].instances, schedule=matching[0])
    return DesiredCount(default)
