"""The one validator of pool settings (no database): the manifest, ``presets set`` and the planner's schedules
all use it, so one table checks what each of them refuses."""

from __future__ import annotations

import pytest

from prebuildd.domain.pools import (
    CronFault,
    check_cron,
    instances_problem,
    pool_problems,
    timezone_problem,
    ttl_problem,
)
from prebuildd.domain.schedules import Schedule, cron_problem


@pytest.mark.parametrize(
    ("cron", "fault", "reason", "sentence"),
    [
        (
            "* * * *",
            CronFault.FIELDS,
            "cron '* * * *' must have 5 fields",
            "schedule '* * * *': expected 5 fields",
        ),
        (
            "@hourly",
            CronFault.FIELDS,
            "cron '@hourly' must have 5 fields",
            "schedule '@hourly': expected 5 fields",
        ),
        (
            "0 8 * * *",
            CronFault.MINUTE,
            "cron '0 8 * * *': the minute field must be '*'",
            "schedule '0 8 * * *': the minute field must be '*'",
        ),
        (
            "* 25 * * *",
            CronFault.INVALID,
            "invalid cron '* 25 * * *': Bad hour",
            "schedule '* 25 * * *': Bad hour",
        ),
        (
            "* * * * mon-xx",
            CronFault.INVALID,
            "invalid cron '* * * * mon-xx': Bad day-of-week",
            "schedule '* * * * mon-xx': Bad day-of-week",
        ),
    ],
)
def test_cron_problems_under_a_key_and_on_their_own(
    cron: str, fault: CronFault, reason: str, sentence: str
) -> None:
    problem = check_cron(cron)
    assert problem is not None and problem.fault is fault
    assert problem.reason.startswith(reason)
    assert problem.sentence.startswith(sentence)
    assert cron_problem(cron) == problem.sentence  # the planner reports the same check


@pytest.mark.parametrize("cron", ["* * * * *", "* 8-18 * * 1-5", "* 0,12 1 * *"])
def test_good_crons(cron: str) -> None:
    assert check_cron(cron) is None and cron_problem(cron) is None


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        (instances_problem(-1), "must be >= 0, got -1"),
        (instances_problem(0), None),
        (ttl_problem(-5), "duration must not be negative, got -5"),
        (ttl_problem(1.5), "must be a whole number of seconds, got 1.5"),
        (ttl_problem(0), None),
        (ttl_problem(3600), None),
        (timezone_problem("Europe/Paris"), None),
        (timezone_problem("Mars/Olympus"), "unknown time zone 'Mars/Olympus': expected an IANA name"),
        (timezone_problem("../etc/passwd"), "unknown time zone '../etc/passwd'"),
        (timezone_problem(""), "unknown time zone ''"),
    ],
)
def test_field_problems(problem: str | None, expected: str | None) -> None:
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith(expected)


def test_pool_problems_name_their_key_in_order() -> None:
    problems = pool_problems(
        instances=-1,
        ttl_seconds=-1,
        timezone="Mars/Olympus",
        schedules=[Schedule("* 8 * * *", 1), Schedule("0 8 * * *", -2)],
    )
    assert [p.key for p in problems] == [
        "instances",
        "ttl",
        "timezone",
        "schedules[1].cron",
        "schedules[1].instances",
    ]
    assert str(problems[0]) == "instances: must be >= 0, got -1"
    assert "minute field" in str(problems[3])


def test_a_preset_without_a_pool_and_good_settings_have_no_problem() -> None:
    assert pool_problems(instances=None, ttl_seconds=0, timezone="UTC") == []
    assert (
        pool_problems(
            instances=2, ttl_seconds=28800, timezone="Europe/Paris", schedules=[Schedule("* 9 * * 1-5", 4)]
        )
        == []
    )


@pytest.mark.parametrize(
    ("instances", "ttl", "problems"),
    [
        (1000, 365 * 24 * 3600, []),
        (1001, 0, ["instances: must be at most 1000, got 1001"]),
        (10**12, 0, ["instances: must be at most 1000, got 1000000000000"]),
        (1, 365 * 24 * 3600 + 1, ["ttl: must be at most 365d (31536000 seconds), got 31536001"]),
    ],
)
def test_pool_sizes_and_ttls_are_bounded_so_bad_input_is_a_named_refusal(
    instances: int, ttl: int, problems: list[str]
) -> None:
    assert [str(p) for p in pool_problems(instances=instances, ttl_seconds=ttl, timezone="UTC")] == problems
