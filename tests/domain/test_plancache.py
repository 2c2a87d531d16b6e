"""The caches of pools at rest (``domain.plancache``): whatever sequence of cycles, a cached target or plan is the
one the uncached path computes, and a change in any input (a column of the preset row, the counts, the demand,
the minute for a schedule, a backoff or a retry falling due, the pause) is computed afresh."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prebuildd.domain.autoscale import Demand
from prebuildd.domain.failures import FailurePolicy
from prebuildd.domain.plancache import PlanCache, TargetCache, uncached_target
from prebuildd.domain.planner import (
    CleanupReason,
    Leftover,
    PresetSnapshot,
    RunningCounts,
    RunningPrebuild,
    plan_preset,
)
from prebuildd.domain.schedules import Schedule
from prebuildd.domain.snapshot import PresetRow
from prebuildd.domain.targets import NO_DEMAND
from tests.support.factories import MIN, NOW, pool_snapshot, preset_row, ws

POLICY = FailurePolicy(
    backoff_interval=timedelta(minutes=1),
    backoff_lookback=timedelta(hours=1),
    max_backoff=timedelta(minutes=30),
    hard_limit=3,
)
WORKING_HOURS = (Schedule("* 8-18 * * *", 3),)


# -- targets of pools read as counts ------------------------------------------------------------------------

rows = st.builds(
    lambda desired, active, schedules, tz, invalidated, expr, auto, failures: preset_row(
        desired,
        active=active,
        schedules=schedules,
        timezone=tz,
        last_invalidated_at=invalidated,
        target_expression=expr,
        autoscale=auto,
        consecutive_failures=failures,
    ),
    st.integers(0, 6),
    st.booleans(),
    st.sampled_from([(), WORKING_HOURS, (Schedule("*/2 * * * *", 1),)]),
    st.sampled_from(["UTC", "Europe/Paris", "Nowhere/Invalid"]),
    st.none() | st.just(NOW - timedelta(hours=3)),
    st.none() | st.just("scheduled_target + 1"),
    st.none() | st.just({"mode": "on"}),
    st.sampled_from([0, 0, 0, 2]),
)
demands = st.sampled_from([NO_DEMAND, Demand(claims=(1, 1, 2, 3, 4), first_at=NOW - timedelta(days=2))])


@st.composite
def target_cycles(draw: st.DrawFn) -> list[tuple[PresetRow, int, int, Demand, datetime]]:
    """A few rows (the same objects come back, as the row cache hands them), then cycles over them with counts
    that sometimes change and a clock that moves by seconds to hours."""
    pool = draw(st.lists(rows, min_size=1, max_size=3))
    now = NOW
    out = []
    for _ in range(draw(st.integers(1, 12))):
        now += draw(st.sampled_from([timedelta(0), timedelta(seconds=10), MIN, timedelta(hours=7)]))
        running = draw(st.integers(0, 6))
        ready = draw(st.integers(0, running))
        out.append((draw(st.sampled_from(pool)), running, ready, draw(demands), now))
    return out


@settings(max_examples=300, deadline=None)
@given(target_cycles())
def test_a_cached_target_is_the_uncached_one(
    cycles: list[tuple[PresetRow, int, int, Demand, datetime]],
) -> None:
    cache = TargetCache(POLICY)
    for row, running, ready, demand, now in cycles:
        assert cache.target(row, running, ready, demand, now) == uncached_target(
            row, running, ready, demand, now, POLICY
        )


def test_a_pool_at_rest_is_computed_once() -> None:
    cache = TargetCache(POLICY)
    row = preset_row(3)
    first = cache.target(row, 3, 3, NO_DEMAND, NOW)
    again = cache.target(row, 3, 3, NO_DEMAND, NOW + timedelta(hours=5))
    assert again[0] is first[0]
    assert (cache.hits, cache.misses) == (1, 1)


def _other(value: Any, name: str) -> Any:
    """A value of the same kind as ``value`` that differs from it (the preset row's columns)."""
    match value:
        case bool():
            return not value
        case int():
            return value + 1
        case str():
            return value + "x" if name != "timezone" else "Europe/Paris"
        case UUID():
            return UUID(int=value.int + 1)
        case datetime():
            return value + MIN
        case tuple():
            return WORKING_HOURS
        case None if name == "autoscale":
            return {"mode": "on"}
        case None if name in ("autoscale_target",):
            return 2
        case None if name == "target_expression":
            return "scheduled_target + 1"
        case None if name == "desired_instances":
            return 1
        case None:
            return NOW - timedelta(hours=1)
    raise AssertionError(f"no other value for {name}={value!r}")


@pytest.mark.parametrize("name", [f.name for f in fields(PresetRow)])
def test_a_change_in_any_column_of_the_row_is_computed_afresh(name: str) -> None:
    cache = TargetCache(POLICY)
    row = preset_row(2, schedules=(), timezone="UTC")
    cache.target(row, 2, 2, NO_DEMAND, NOW)
    changed = replace(row, **{name: _other(getattr(row, name), name)})
    assert changed != row
    misses = cache.misses
    got = cache.target(changed, 2, 2, NO_DEMAND, NOW)
    assert got == uncached_target(changed, 2, 2, NO_DEMAND, NOW, POLICY)
    assert cache.misses == misses + 1, f"a change of {name} reused the previous target"


@pytest.mark.parametrize(
    ("change", "what"),
    [
        (lambda row, now: (row, 3, 2, NO_DEMAND, now), "running"),
        (lambda row, now: (row, 2, 1, NO_DEMAND, now), "ready"),
        (lambda row, now: (row, 2, 2, Demand(first_at=NOW - timedelta(days=1)), now), "demand"),
        (lambda row, now: (replace(row, schedules=WORKING_HOURS), 2, 2, NO_DEMAND, now), "schedules"),
    ],
)
def test_a_change_in_counts_or_demand_is_computed_afresh(change: Any, what: str) -> None:
    cache = TargetCache(POLICY)
    row = preset_row(2)
    cache.target(row, 2, 2, NO_DEMAND, NOW)
    args = change(row, NOW)
    misses = cache.misses
    assert cache.target(*args) == uncached_target(*args, POLICY)
    assert cache.misses == misses + 1, what


def test_a_scheduled_pool_is_computed_again_each_minute() -> None:
    """07:59 → 08:00 (UTC) enters the schedule's hours: the target is 3, not the 0 of the minute before."""
    cache = TargetCache(POLICY)
    row = preset_row(0, schedules=WORKING_HOURS)
    before = NOW.replace(hour=7, minute=59, second=1)
    assert cache.target(row, 0, 0, NO_DEMAND, before)[0].snapshot.desired_instances == 0
    same_minute = cache.target(row, 0, 0, NO_DEMAND, before + timedelta(seconds=30))
    assert cache.hits == 1
    at_eight = before + MIN
    got = cache.target(row, 0, 0, NO_DEMAND, at_eight)
    assert got == uncached_target(row, 0, 0, NO_DEMAND, at_eight, POLICY)
    assert got is not same_minute and cache.hits == 1
    plans = PlanCache()
    assert plans.plan(got[0].snapshot, before).create == 0
    assert plans.plan(got[0].snapshot, at_eight).create == 3


def test_presets_gone_are_forgotten() -> None:
    cache = TargetCache(POLICY)
    a, b = preset_row(1), preset_row(1, preset_id=UUID(int=99))
    cache.target(a, 1, 1, NO_DEMAND, NOW)
    cache.target(b, 1, 1, NO_DEMAND, NOW)
    cache.retain([b])
    cache.target(a, 1, 1, NO_DEMAND, NOW)
    assert cache.misses == 3


# -- plans ---------------------------------------------------------------------------------------------------

snapshots = st.builds(
    lambda desired, active, ttl, counted, n, leftover_retry, backoff, limited, schedules, starting: (
        pool_snapshot(
            desired_instances=desired,
            active=active,
            ttl_seconds=ttl,
            running=()
            if counted
            else tuple(RunningPrebuild(ws(i), NOW - i * timedelta(hours=1)) for i in range(n)),
            running_counts=RunningCounts(min(n, desired), min(n, desired)) if counted and active else None,
            leftovers=(
                ()
                if leftover_retry is None
                else (Leftover(ws(200), CleanupReason.DELETE_FAILED, NOW + leftover_retry),)
            ),
            backoff_until=None if backoff is None else NOW + backoff,
            hard_limited=limited,
            schedules=schedules,
            starting=starting,
        )
    ),
    st.integers(0, 5),
    st.booleans(),
    st.sampled_from([0, 3600, 4 * 3600]),
    st.booleans(),
    st.integers(0, 6),
    st.none() | st.sampled_from([-MIN, timedelta(0), MIN, 3 * MIN]),
    st.none() | st.sampled_from([-MIN, MIN, 5 * MIN]),
    st.booleans(),
    st.sampled_from([(), WORKING_HOURS]),
    st.integers(0, 2),
)


@st.composite
def plan_cycles(draw: st.DrawFn) -> list[tuple[PresetSnapshot, datetime, bool]]:
    pool = draw(st.lists(snapshots, min_size=1, max_size=3))
    now = NOW.replace(hour=7, minute=58)
    out = []
    for _ in range(draw(st.integers(1, 12))):
        now += draw(st.sampled_from([timedelta(0), timedelta(seconds=20), MIN, timedelta(hours=2)]))
        out.append((draw(st.sampled_from(pool)), now, draw(st.booleans())))
    return out


@settings(max_examples=300, deadline=None)
@given(plan_cycles())
def test_a_cached_plan_is_the_uncached_one(cycles: list[tuple[PresetSnapshot, datetime, bool]]) -> None:
    cache = PlanCache()
    for snap, now, paused in cycles:
        assert _outcome(cache.plan, snap, now, paused) == _outcome(plan_preset, snap, now, paused)


def _outcome(plan: Any, snap: PresetSnapshot, now: datetime, paused: bool) -> object:
    """The plan, or the refusal of counts that cannot be planned (the reader reads such a pool's rows)."""
    try:
        return plan(snap, now, paused=paused)
    except ValueError as exc:
        return str(exc)


def test_a_plan_at_rest_is_made_once_and_redone_when_the_pause_changes() -> None:
    cache = PlanCache()
    snap = pool_snapshot(desired_instances=2, running_counts=RunningCounts(2, 2))
    first = cache.plan(snap, NOW)
    assert cache.plan(snap, NOW + timedelta(hours=3)) is first
    paused = cache.plan(snap, NOW, paused=True)
    assert paused == plan_preset(snap, NOW, paused=True) and paused.blocked == "paused"
    assert cache.hits == 1


@pytest.mark.parametrize(
    "snap",
    [
        pytest.param(pool_snapshot(desired_instances=2, backoff_until=NOW + MIN), id="a backoff ending"),
        pytest.param(
            pool_snapshot(leftovers=(Leftover(ws(1), CleanupReason.DELETE_FAILED, NOW + MIN),)),
            id="a failed delete's retry falling due",
        ),
    ],
)
def test_a_plan_is_redone_when_its_time_comes(snap: PresetSnapshot) -> None:
    cache = PlanCache()
    before = cache.plan(snap, NOW)
    after = cache.plan(snap, NOW + 2 * MIN)
    assert after == plan_preset(snap, NOW + 2 * MIN)
    assert after != before


def test_running_prebuilds_with_a_ttl_are_planned_every_time() -> None:
    """Any of them may expire at any moment: no key holds that."""
    cache = PlanCache()
    snap = pool_snapshot(
        desired_instances=1, ttl_seconds=3600, running=(RunningPrebuild(ws(1), NOW - 59 * MIN),)
    )
    assert cache.plan(snap, NOW).deletes == ()
    assert cache.plan(snap, NOW + 2 * MIN).deletes != ()
    assert cache.hits == 0


def test_an_equal_but_new_snapshot_is_planned_again() -> None:
    cache = PlanCache()
    snap = pool_snapshot(desired_instances=1)
    cache.plan(snap, NOW)
    cache.plan(replace(snap), NOW)
    assert cache.hits == 0
