"""The base-stock autoscaler: the size formula, the estimates, the stabilization window, the gates, the fallback."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prebuildd.domain.autoscale import (
    DEFAULT_LEAD,
    AutoscaleSettings,
    AutoscaleState,
    Demand,
    base_stock_size,
    decide,
    estimate,
    recent_rate,
    recommended,
    settings_problems,
)
from prebuildd.domain.targets import pool_target
from tests.support.factories import pool_snapshot, preset_row

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
DEFAULT = AutoscaleSettings(min=1, max=20, target_hit_rate=0.95)


def demand(rate: float, *, lead: float = 240.0, history: timedelta = timedelta(days=2)) -> Demand:
    """A steady demand of ``rate`` claims per minute, all hits."""
    claims = tuple(round(rate * m) for m in (5, 10, 30, 60, 120))
    return Demand(
        claims=claims,
        day=round(rate * 1440),
        claims_hour=claims[3],
        first_at=NOW - history,
        ready_p90_seconds=lead,
        ready_samples=20,
    )


def poisson_cdf(k: int, mean: float) -> float:
    return sum(math.exp(-mean) * mean**i / math.factorial(i) for i in range(k + 1))


@pytest.mark.parametrize(
    ("rate", "lead", "hit", "size"),
    [
        (0.0, 240, 0.95, 1),  # no demand: one prebuild still serves the first claim
        (0.5, 240, 0.95, 6),  # mean 2: P(X<=4) = 0.947, P(X<=5) = 0.983
        (0.8, 250, 0.95, 8),
        (2.0, 480, 0.95, 24),  # mean 16
        (2.0, 480, 0.5, 17),  # the median of Poisson(16) is 16: S - 1 = 16
        (0.1, 60, 0.99, 2),
    ],
)
def test_base_stock_size_table(rate: float, lead: float, hit: float, size: int) -> None:
    assert base_stock_size(rate, lead, hit) == size
    mean = rate * lead / 60
    assert poisson_cdf(size - 1, mean) >= hit - 1e-9
    if size > 1:
        assert poisson_cdf(size - 2, mean) < hit


def test_large_mean_does_not_underflow() -> None:
    assert 900 < base_stock_size(100, 600, 0.95) <= 1000


@given(st.floats(0, 20), st.floats(0, 20), st.floats(1, 1800), st.floats(0.5, 0.999))
def test_monotone_in_rate(a: float, b: float, lead: float, hit: float) -> None:
    lo, hi = sorted((a, b))
    assert base_stock_size(lo, lead, hit) <= base_stock_size(hi, lead, hit)


@given(st.floats(0, 10), st.floats(1, 1800), st.floats(1, 1800), st.floats(0.5, 0.999))
def test_monotone_in_lead_time(rate: float, a: float, b: float, hit: float) -> None:
    lo, hi = sorted((a, b))
    assert base_stock_size(rate, lo, hit) <= base_stock_size(rate, hi, hit)


@settings(max_examples=200)
@given(
    rate=st.floats(0, 10),
    lead=st.floats(10, 1800),
    lo=st.integers(0, 30),
    span=st.integers(0, 30),
    prev=st.none() | st.integers(0, 60),
    age=st.integers(0, 3600),
)
def test_never_outside_bounds(
    rate: float, lead: float, lo: int, span: int, prev: int | None, age: int
) -> None:
    cfg = AutoscaleSettings(min=lo, max=max(lo + span, 1))
    state = (
        None
        if prev is None
        else AutoscaleState(prev, NOW - timedelta(seconds=age), NOW - timedelta(seconds=age))
    )
    d = decide(cfg, demand(rate, lead=lead), state, now=NOW, scheduled=2)
    if d.fallback:  # too little data (under 20 claims a day): instances, whatever the bounds
        assert rate * 1440 < 20.5 and d.target == 2
    elif prev is None or prev <= cfg.max:
        assert cfg.min <= d.target <= cfg.max or (prev is not None and cfg.min <= d.target <= prev)
    else:
        assert d.target <= cfg.max


def test_scale_up_is_immediate() -> None:
    state = AutoscaleState(3, NOW - timedelta(seconds=30), NOW - timedelta(seconds=30))
    d = decide(DEFAULT, demand(2.0, lead=480), state, now=NOW, scheduled=2)
    assert d.target == 20  # 24 clamped to max
    assert d.state == AutoscaleState(20, NOW, NOW)
    assert d.reason == "autoscale: 2 claims/min, ready p90 8m, target 95%"


def test_lead_time_is_the_mean_by_default_or_the_p90() -> None:
    d = Demand(**{**demand(0.8, lead=250).__dict__, "ready_mean_seconds": 150.0})
    p90 = decide(AutoscaleSettings(min=1, max=20, lead_time="p90"), d, None, now=NOW, scheduled=2)
    mean = decide(DEFAULT, d, None, now=NOW, scheduled=2)
    assert (mean.target, p90.target) == (base_stock_size(0.8, 150, 0.95), base_stock_size(0.8, 250, 0.95))
    assert p90.reason == "autoscale: 0.8 claims/min, ready p90 4m10s, target 95%"
    assert mean.reason == "autoscale: 0.8 claims/min, ready mean 2m30s, p90 4m10s, target 95%"


def test_rate_follows_the_long_window_unless_a_short_one_departs_from_it() -> None:
    steady = demand(0.5)
    assert recent_rate(steady) == 0.5
    noisy = Demand(**{**steady.__dict__, "claims": (3, 7, 15, 30, 60)})  # 0.7/min over 10 min: noise
    assert recent_rate(noisy) == 0.5
    rising = Demand(**{**steady.__dict__, "claims": (10, 20, 30, 45, 75)})  # 2/min over 10 min
    assert recent_rate(rising) == 2.0
    stopped = Demand(**{**steady.__dict__, "claims": (0, 0, 0, 15, 75)})  # nothing for 30 minutes
    assert recent_rate(stopped) == 0.0


@given(rate=st.floats(0.05, 10), prev=st.integers(0, 20))
def test_no_scale_up_while_backing_off(rate: float, prev: int) -> None:
    state = AutoscaleState(prev, NOW - timedelta(hours=1), NOW - timedelta(hours=1))
    d = decide(DEFAULT, demand(rate), state, now=NOW, scheduled=2, may_scale_up=False)
    assert d.target <= prev
    assert (
        "no scale-up while backing off" in d.reason
        or d.target == decide(DEFAULT, demand(rate), state, now=NOW, scheduled=2).target
    )
    fresh = decide(DEFAULT, demand(rate), None, now=NOW, scheduled=2, may_scale_up=False)
    assert fresh.target <= max(2, DEFAULT.min)


@given(
    rate=st.floats(0.05, 0.4),
    prev=st.integers(6, 20),
    since_rise=st.integers(0, 1200),
    since_change=st.integers(0, 1200),
)
def test_stabilization_window_respected(rate: float, prev: int, since_rise: int, since_change: int) -> None:
    since_change = min(since_change, since_rise)
    state = AutoscaleState(prev, NOW - timedelta(seconds=since_rise), NOW - timedelta(seconds=since_change))
    d = decide(DEFAULT, demand(rate), state, now=NOW, scheduled=2)
    if since_rise < 600 or since_change < 60:
        assert d.target == prev
    else:
        assert prev - math.ceil(prev * 0.25) <= d.target < prev  # one bounded step
        assert d.state is not None and d.state.raised_at == state.raised_at and d.state.changed_at == NOW


def test_scale_down_walks_to_the_estimate_in_steps() -> None:
    state = AutoscaleState(20, NOW - timedelta(hours=1), NOW - timedelta(hours=1))
    targets = []
    now = NOW
    for _ in range(12):
        d = decide(DEFAULT, demand(0.5), state, now=now, scheduled=2)
        assert d.state is not None
        state = d.state
        targets.append(d.target)
        now += timedelta(minutes=1)
    assert targets == [15, 11, 8, 6, 6, 6, 6, 6, 6, 6, 6, 6]  # 6 prebuilds for 0.5/min at 4 min


@pytest.mark.parametrize(
    ("case", "d"),
    [
        ("no data", Demand()),
        (
            "19 claims",
            Demand(claims=(1, 2, 5, 10, 19), day=19, first_at=NOW - timedelta(days=1), ready_p90_seconds=60),
        ),
        (
            "20 min of history",
            Demand(
                claims=(5, 10, 30, 30, 30), day=30, first_at=NOW - timedelta(minutes=20), ready_p90_seconds=60
            ),
        ),
    ],
)
def test_fallback_with_too_little_data(case: str, d: Demand) -> None:
    state = AutoscaleState(9, NOW - timedelta(hours=1), NOW - timedelta(hours=1))
    result = decide(DEFAULT, d, state, now=NOW, scheduled=2)
    assert (result.target, result.fallback, result.estimate) == (2, True, None), case
    assert "too little data" in result.reason
    assert recommended(d, NOW) is None


def test_schedule_is_a_floor() -> None:
    d = decide(DEFAULT, demand(0.1), None, now=NOW, scheduled=8, schedule_floor=8)
    assert d.target == 8


def test_weekly_history_raises_the_estimate_ahead_of_a_rise() -> None:
    quiet = demand(0.05, history=timedelta(days=15))
    # in each of the two past weeks, 30 claims in the 15 minutes after now: 1/min expected
    ahead = Demand(**{**quiet.__dict__, "weekly_next_15m": 30, "weekly_next_60m": 40})
    without = decide(DEFAULT, quiet, None, now=NOW, scheduled=1)
    with_history = decide(DEFAULT, ahead, None, now=NOW, scheduled=1)
    assert with_history.estimate is not None and with_history.estimate.weekly_rate == 1.0
    assert with_history.target > without.target


def test_settings_range_checked() -> None:
    problems = settings_problems(AutoscaleSettings(min=-1, max=2000, target_hit_rate=1.0))
    assert [k for k, _ in problems] == ["min", "max", "target_hit_rate"]
    assert settings_problems(AutoscaleSettings(min=5, max=3)) == [("max", "must be >= min (5), got 3")]
    assert settings_problems(DEFAULT) == []


def test_default_lead_time_only_while_none_is_measured() -> None:
    """A pool whose claims all miss (``instances = 0``) measures no time to ready: L is the default, not a
    fallback to ``instances`` that would keep it at 0 for ever."""
    unmeasured = Demand(misses=(5, 10, 30, 30, 30), day=30, first_at=NOW - timedelta(hours=2))
    d = decide(DEFAULT, unmeasured, None, now=NOW, scheduled=0)
    assert not d.fallback and d.estimate is not None
    assert d.estimate.lead_seconds == DEFAULT_LEAD.total_seconds() and not d.estimate.measured
    assert d.target == base_stock_size(1.0, DEFAULT_LEAD.total_seconds(), 0.95)
    assert "ready time 5m (default: none measured yet)" in d.reason
    measured = Demand(**{**unmeasured.__dict__, "ready_p90_seconds": 60.0, "ready_samples": 1})
    est = estimate(measured, NOW, 0.95)
    assert est is not None and est.lead_seconds == 60.0 and est.measured


def test_same_time_of_day_anticipates_a_rise_before_a_week_of_history() -> None:
    quiet = demand(0.05, history=timedelta(days=3))
    # in each of the 3 past days, 30 claims in the 15 minutes after now (a 9:00 rush): 2/min expected
    rush = Demand(**{**quiet.__dict__, "daily_next_15m": 90, "daily_next_60m": 120})
    without = decide(DEFAULT, quiet, None, now=NOW, scheduled=1)
    ahead = decide(DEFAULT, rush, None, now=NOW, scheduled=1)
    assert ahead.estimate is not None and ahead.estimate.seasonal == "day"
    assert ahead.estimate.rate == 2.0 and ahead.estimate.recent_rate == 0.05
    assert ahead.target > without.target
    assert "(past days at this time: 2, now 0.05)" in ahead.reason


def test_same_time_of_week_wins_over_the_time_of_day() -> None:
    """A Saturday after five workdays: the days say 9:00 rush, the past weekends say quiet."""
    quiet = demand(0.05, history=timedelta(days=15))
    saturday = Demand(
        **{**quiet.__dict__, "daily_next_15m": 150, "daily_next_60m": 200, "weekly_next_60m": 6}
    )
    d = decide(DEFAULT, saturday, None, now=NOW, scheduled=1)
    assert d.estimate is not None and d.estimate.seasonal == "week"
    assert d.estimate.rate == 0.05  # the weekly 0.05/min is no departure from the recent rate
    assert d.target == decide(DEFAULT, quiet, None, now=NOW, scheduled=1).target


def test_seasonal_noise_does_not_raise_a_steady_pool() -> None:
    steady = demand(0.5, history=timedelta(days=3))
    # the past days saw 0.5/min, with the next 15 minutes a little high by chance: noise, not a rise
    noisy = Demand(**{**steady.__dict__, "daily_next_15m": 28, "daily_next_60m": 90})
    d = decide(DEFAULT, noisy, None, now=NOW, scheduled=1)
    assert d.estimate is not None and d.estimate.rate == 0.5


@given(
    rate=st.floats(0, 5),
    days=st.integers(0, 40),
    next15=st.integers(0, 300),
    extra=st.integers(0, 900),
    weekly=st.booleans(),
)
def test_history_only_raises_the_estimate(
    rate: float, days: int, next15: int, extra: int, weekly: bool
) -> None:
    base = demand(rate, history=timedelta(days=days, hours=1))
    keys = ("weekly_next_15m", "weekly_next_60m") if weekly else ("daily_next_15m", "daily_next_60m")
    seen = Demand(**{**base.__dict__, keys[0]: next15, keys[1]: next15 + extra})
    with_history, without = estimate(seen, NOW, 0.95), estimate(base, NOW, 0.95)
    if without is None:
        assert with_history is None
        return
    assert with_history is not None
    assert with_history.rate >= with_history.recent_rate == without.recent_rate
    assert with_history.size >= without.size


@pytest.mark.parametrize("per_minute", [1, 2, 5])
@pytest.mark.parametrize("burst", [0, 12, 30])
def test_after_the_load_stops_the_rate_never_rises(per_minute: int, burst: int) -> None:
    """A load of ``per_minute`` claims for 36 minutes and a last burst, then none: as the windows empty one after
    the other the estimate only falls (a longer window's rise is bounded by the shorter windows inside it)."""
    claims = [-m for m in range(36) for _ in range(per_minute)] + [0] * burst
    rates = []
    for now in range(200):
        counts = tuple(sum(1 for t in claims if now - w < t <= now) for w in (5, 10, 30, 60, 120))
        rates.append(recent_rate(Demand(claims=counts)))
    assert all(b <= a for a, b in itertools.pairwise(rates)), rates
    assert rates[0] >= per_minute and rates[-1] == 0


@pytest.mark.parametrize(
    ("gate", "target"),
    [
        pytest.param({}, 6, id="healthy: up at once"),
        pytest.param({"backoff_until": NOW + timedelta(minutes=1)}, 3, id="backing off: held"),
        pytest.param({"backoff_until": NOW - timedelta(seconds=1)}, 6, id="backoff over: up"),
        pytest.param({"hard_limited": True}, 3, id="hard-limited: held"),
    ],
)
def test_the_pool_target_holds_while_the_preset_backs_off_or_is_hard_limited(
    gate: dict[str, object], target: int
) -> None:
    # The gate as the reconciler applies it: the preset's backoff and hard limit, not only decide()'s flag.
    snap = replace(pool_snapshot(desired_instances=1), **gate)
    row = preset_row(
        1,
        preset_id=snap.preset_id,
        autoscale=DEFAULT.as_dict(),
        autoscale_target=3,
        autoscale_raised_at=NOW - timedelta(hours=1),
        autoscale_changed_at=NOW - timedelta(hours=1),
    )
    out = pool_target(snap, row, demand(2.0, lead=60.0), NOW)  # base stock 6
    assert (out.snapshot.target_override, out.snapshot.target_source) == (target, "autoscale")
    assert ("no scale-up while backing off" in out.snapshot.target_reason) == (target == 3)
