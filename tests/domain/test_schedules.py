"""Desired count from cron-hour schedules (SPEC §5): whole hours in the preset's timezone, first match wins,
invalid or overlapping schedules fall back to desired_instances and say why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from prebuildd.domain.schedules import (
    _WEEK_START,
    DesiredCount,
    Schedule,
    _hours_matching,
    _week_hours,
    cron_problem,
    desired_at,
    overlap,
)

WORK_HOURS = Schedule("* 8-18 * * 1-5", 5)
NIGHT = Schedule("* 0-5 * * *", 0)
DEFAULT = 2


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# --- which hours a schedule covers ---------------------------------------------------------------------------


# 2026-03-02 is a Monday; 2026-03-07 a Saturday. UTC unless said otherwise.
@pytest.mark.parametrize(
    ("now", "tz", "expected"),
    [
        pytest.param(utc(2026, 3, 2, 7, 59, 59), "UTC", DEFAULT, id="07:59:59 is before 8-18"),
        pytest.param(utc(2026, 3, 2, 8, 0), "UTC", 5, id="08:00 opens 8-18"),
        pytest.param(utc(2026, 3, 2, 13, 37, 12, 345), "UTC", 5, id="mid-day with seconds and micros"),
        pytest.param(utc(2026, 3, 2, 18, 59, 59), "UTC", 5, id="18:59 is still inside 8-18 (whole hours)"),
        pytest.param(utc(2026, 3, 2, 19, 0), "UTC", DEFAULT, id="19:00 is after 8-18"),
        pytest.param(utc(2026, 3, 7, 12, 0), "UTC", DEFAULT, id="Saturday is outside weekdays 1-5"),
        # Europe/Berlin is UTC+1 in winter: 07:00 UTC is 08:00 local.
        pytest.param(utc(2026, 3, 2, 7, 0), "Europe/Berlin", 5, id="Berlin winter: 07:00Z is 08:00 local"),
        pytest.param(utc(2026, 3, 2, 6, 59), "Europe/Berlin", DEFAULT, id="Berlin winter: 06:59Z is 07:59"),
        pytest.param(utc(2026, 3, 2, 17, 59), "Europe/Berlin", 5, id="Berlin winter: 17:59Z is 18:59"),
        pytest.param(utc(2026, 3, 2, 18, 0), "Europe/Berlin", DEFAULT, id="Berlin winter: 18:00Z is 19:00"),
        # Summer: UTC+2, so 06:00 UTC is 08:00 local.
        pytest.param(utc(2026, 7, 6, 6, 0), "Europe/Berlin", 5, id="Berlin summer: 06:00Z is 08:00 local"),
        pytest.param(utc(2026, 7, 6, 5, 59), "Europe/Berlin", DEFAULT, id="Berlin summer: 05:59Z is 07:59"),
        # The weekday is the local one: Monday 02:00 UTC is Sunday 21:00 in New York.
        pytest.param(utc(2026, 3, 2, 2, 0), "America/New_York", DEFAULT, id="weekday is local (NY Sunday)"),
        # Sunday 23:00 UTC is Monday 08:00 in Tokyo: the local weekday makes it match.
        pytest.param(utc(2026, 3, 1, 23, 0), "Asia/Tokyo", 5, id="weekday is local (Tokyo Monday)"),
        pytest.param(utc(2026, 3, 1, 22, 59), "Asia/Tokyo", DEFAULT, id="Tokyo Monday 07:59"),
    ],
)
def test_work_hours_schedule(now: datetime, tz: str, expected: int) -> None:
    assert desired_at(now, tz, [WORK_HOURS], DEFAULT).instances == expected


def test_the_answer_does_not_depend_on_the_offset_of_now() -> None:
    same_instant = datetime(2026, 3, 2, 9, 0, tzinfo=timezone(timedelta(hours=2)))  # 07:00Z
    assert desired_at(same_instant, "Europe/Berlin", [WORK_HOURS], DEFAULT).instances == 5
    assert desired_at(same_instant, "UTC", [WORK_HOURS], DEFAULT).instances == DEFAULT


# --- daylight-saving edges ----------------------------------------------------------------------------------


# Europe/Berlin: on 2026-03-29 01:00Z clocks jump from 02:00 to 03:00 local; on 2026-10-25 01:00Z they fall back
# from 03:00 to 02:00, so the local hour 02 happens twice.
@pytest.mark.parametrize(
    ("now", "cron", "matches"),
    [
        pytest.param(utc(2026, 3, 29, 0, 59), "* 1 * * *", True, id="spring: 00:59Z is 01:59 CET"),
        pytest.param(utc(2026, 3, 29, 1, 0), "* 1 * * *", False, id="spring: 01:00Z is 03:00 CEST"),
        pytest.param(utc(2026, 3, 29, 1, 0), "* 3 * * *", True, id="spring: hour 3 starts at 01:00Z"),
        pytest.param(utc(2026, 3, 29, 0, 30), "* 2 * * *", False, id="spring: hour 2 skipped (before)"),
        pytest.param(utc(2026, 3, 29, 1, 30), "* 2 * * *", False, id="spring: hour 2 skipped (after)"),
        pytest.param(utc(2026, 10, 25, 0, 0), "* 2 * * *", True, id="autumn: first 02:00 (CEST)"),
        pytest.param(utc(2026, 10, 25, 1, 59), "* 2 * * *", True, id="autumn: second 02:59 (CET)"),
        pytest.param(utc(2026, 10, 25, 2, 0), "* 2 * * *", False, id="autumn: 02:00Z is 03:00 CET"),
        pytest.param(utc(2026, 10, 24, 23, 59), "* 2 * * *", False, id="autumn: 23:59Z is 01:59 CEST"),
    ],
)
def test_dst_edges_in_berlin(now: datetime, cron: str, matches: bool) -> None:
    result = desired_at(now, "Europe/Berlin", [Schedule(cron, 9)], DEFAULT)
    assert result.problem is None
    assert result.instances == (9 if matches else DEFAULT)


def test_autumn_repeated_hour_is_covered_for_two_real_hours() -> None:
    start = utc(2026, 10, 24, 22, 0)
    covered = [
        minute
        for minute in range(0, 6 * 60, 15)
        if desired_at(
            start + timedelta(minutes=minute), "Europe/Berlin", [Schedule("* 2 * * *", 9)], 0
        ).instances
    ]
    # 00:00Z..01:59Z, i.e. 02:00-02:59 CEST then 02:00-02:59 CET.
    assert [start + timedelta(minutes=m) for m in (covered[0], covered[-1])] == [
        utc(2026, 10, 25, 0, 0),
        utc(2026, 10, 25, 1, 45),
    ]
    assert len(covered) == 8


# --- first match, fallback, problems ------------------------------------------------------------------------


def test_no_schedules_means_desired_instances() -> None:
    assert desired_at(utc(2026, 3, 2, 12), "UTC", [], 4) == DesiredCount(4)


def test_matching_schedule_is_reported_with_its_target() -> None:
    result = desired_at(utc(2026, 3, 2, 12), "UTC", [NIGHT, WORK_HOURS], DEFAULT)
    assert result == DesiredCount(5, schedule=WORK_HOURS)


def test_a_schedule_can_set_zero() -> None:
    result = desired_at(utc(2026, 3, 2, 3), "UTC", [NIGHT, WORK_HOURS], DEFAULT)
    assert result == DesiredCount(0, schedule=NIGHT)


def test_no_matching_schedule_means_desired_instances_without_problem() -> None:
    assert desired_at(utc(2026, 3, 2, 6), "UTC", [NIGHT, WORK_HOURS], DEFAULT) == DesiredCount(DEFAULT)


def test_an_overlap_falls_back_and_names_both_schedules_and_the_first_shared_hour() -> None:
    lunch = Schedule("* 12 * * *", 7)
    result = desired_at(utc(2026, 3, 2, 12, 30), "UTC", [WORK_HOURS, lunch], DEFAULT)
    assert result.instances == DEFAULT
    assert result.schedule is None
    assert result.problem == (
        "schedules '* 8-18 * * 1-5' and '* 12 * * *' overlap (both cover Mon 12:00): using instances"
    )


@pytest.mark.parametrize(
    "at",
    [
        pytest.param(utc(2026, 3, 2, 9), id="a weekday hour only the work-hours schedule covers"),
        pytest.param(utc(2026, 3, 7, 12), id="a weekend noon only the lunch schedule covers"),
        pytest.param(utc(2026, 3, 7, 3), id="an hour neither covers"),
    ],
)
def test_an_overlap_anywhere_in_the_week_falls_back_at_every_hour(at: datetime) -> None:
    # As the reference reads it: a set of schedules that overlaps somewhere is wrong everywhere, not only at the
    # shared hours (where a pool would otherwise jump between two targets without warning).
    result = desired_at(at, "UTC", [WORK_HOURS, Schedule("* 12 * * *", 7)], DEFAULT)
    assert result.instances == DEFAULT and result.problem is not None and "overlap" in result.problem


@pytest.mark.parametrize(
    ("crons", "shared"),
    [
        pytest.param(["* 8 * * 0", "* 8 * * 7"], "Sun 08:00", id="0 and 7 are both Sunday"),
        pytest.param(["* 8 * * SUN", "* 0-8/4 * * 0"], "Sun 08:00", id="names and steps"),
        pytest.param(["* 23 * * FRI", "* 20-23 * * 5"], "Fri 23:00", id="the last hour of a range"),
        pytest.param(["* 8-18 * * 1-5", "* 0-5 * * *", "* 19-23 * * *"], None, id="three that tile the day"),
        pytest.param(["* 8-18 * * 1-5", "* 8-18 * * 6,0"], None, id="weekdays and the weekend"),
        pytest.param(
            ["* 9 1 * *", "* 9 * * *"], "Jan 01 09:00", id="a day of the month: checked over a year"
        ),
        pytest.param(["* 9 29 2 *", "* 9-10 29 * *"], "Feb 29 09:00", id="the leap day and every 29th"),
        pytest.param(["* 9 29 2 *", "* 10 * * *"], None, id="a leap day, another hour"),
    ],
)
def test_overlaps_are_found_over_the_week_or_the_year(crons: list[str], shared: str | None) -> None:
    found = overlap(crons)
    if shared is None:
        assert found is None
    else:
        assert found is not None and f"both cover {shared}" in found


@pytest.mark.parametrize(
    "cron",
    [
        "* * * * *",
        "* 8-18 * * 1-5",
        "* */3 * * *",
        "* 1-20/4 * * MON-FRI",
        "* 9,12,15 * * 0",
        "* 7 * * 7",
        "* 22 * * sat,sun",
        "* 5/2 * * *",
        "* 3 * * 1/2",
        "* 10-12 * * tue-thu",
        "* 4 * * 5L",
    ],
)
def test_the_quick_reading_of_a_weekly_cron_agrees_with_cronsim(cron: str) -> None:
    # The fast path reads the hour and weekday fields itself; cronsim's minute-by-minute reading is the truth.
    assert _week_hours(cron) == _hours_matching(cron, _WEEK_START, 7 * 24)


@pytest.mark.parametrize(
    ("cron", "needle"),
    [
        pytest.param("0 8-18 * * *", "minute field must be '*'", id="minute 0"),
        pytest.param("*/5 8-18 * * *", "minute field must be '*'", id="minute step"),
        pytest.param("30 * * * *", "minute field must be '*'", id="minute 30"),
        pytest.param("* 8-18 * *", "expected 5 fields", id="four fields"),
        pytest.param("* * 8-18 * * *", "expected 5 fields", id="six fields"),
        pytest.param("@hourly", "expected 5 fields", id="nickname"),
        pytest.param("", "expected 5 fields", id="empty"),
        pytest.param("* 25 * * *", "'* 25 * * *'", id="hour 25"),
        pytest.param("* 22-2 * * *", "'* 22-2 * * *'", id="wrapping hour range"),
        pytest.param("* * * * 8", "'* * * * 8'", id="weekday 8"),
        pytest.param("* * 32 * *", "'* * 32 * *'", id="day 32"),
        pytest.param("* 8 31 2 *", "'* 8 31 2 *'", id="a date that never happens"),
    ],
)
def test_invalid_cron_is_a_problem_and_falls_back(cron: str, needle: str) -> None:
    problem = cron_problem(cron)
    assert problem is not None and needle in problem
    result = desired_at(utc(2026, 3, 2, 12), "UTC", [Schedule(cron, 9)], DEFAULT)
    assert result.instances == DEFAULT
    assert result.problem is not None and needle in result.problem
    assert "schedules ignored" in result.problem


@pytest.mark.parametrize(
    "cron",
    [
        "* * * * *",
        "* 8-18 * * 1-5",
        "* 8,12,18 * * *",
        "* 8 * * MON",
        "* */2 * * *",
        "* 0 1 1 *",
        "* 8 29 2 *",
    ],
)
def test_valid_cron_has_no_problem(cron: str) -> None:
    assert cron_problem(cron) is None


def test_one_invalid_schedule_disables_all_of_them() -> None:
    # A valid schedule matches now, but the set is invalid as a whole: desired_instances, with the reason.
    result = desired_at(utc(2026, 3, 2, 12), "UTC", [WORK_HOURS, Schedule("0 * * * *", 1)], DEFAULT)
    assert result.instances == DEFAULT
    assert result.problem is not None and "'0 * * * *'" in result.problem


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../etc/passwd"])
def test_unknown_timezone_falls_back_with_a_problem(tz: str) -> None:
    result = desired_at(utc(2026, 3, 2, 12), tz, [WORK_HOURS], DEFAULT)
    assert result.instances == DEFAULT
    assert result.problem is not None and "timezone" in result.problem


def test_unknown_timezone_without_schedules_is_no_problem() -> None:
    assert desired_at(utc(2026, 3, 2, 12), "Mars/Olympus", [], DEFAULT) == DesiredCount(DEFAULT)
