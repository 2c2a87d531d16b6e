"""Recurring bursts: detected in the busy minutes, learnt once they recur at consistent intervals, pre-warmed one
lead time before the earliest expected next one, left out of the rate windows; bounded, gated and released like
any other target."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from prebuildd.domain.autoscale import (
    BURST_LOOKBACK,
    AutoscaleSettings,
    AutoscaleState,
    Burst,
    Demand,
    base_stock_size,
    burst_forecast,
    bursts,
    decide,
    estimate,
    recommended,
)

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
DEFAULT = AutoscaleSettings(min=1, max=40, target_hit_rate=0.95)
MEAN, P90 = 276.0, 480.0  # the bench's lognormal build times: median 4 min, p90 8 min


def at(hh: int, mm: int = 0) -> datetime:
    return NOW.replace(hour=hh, minute=mm)


def demand(
    rate: float = 0.1,
    starts: tuple[datetime, ...] = (),
    *,
    size: int = 30,
    now: datetime = NOW,
    mean: float = MEAN,
    p90: float = P90,
) -> Demand:
    """A background of ``rate`` claims per minute plus bursts of ``size`` claims over two minutes at ``starts``;
    the windows hold the bursts that fall in them, as the snapshot's counts do."""
    busy = tuple(
        sorted((s + i * MIN, n) for s in starts for i, n in enumerate((size // 2, size - size // 2)))
    )
    recent = [(m, n) for m, n in busy if now - BURST_LOOKBACK < m <= now]

    def window(minutes: int) -> int:
        inside = sum(n for m, n in recent if m + MIN > now - timedelta(minutes=minutes))
        return round(rate * minutes) + inside

    claims = tuple(window(w) for w in (5, 10, 30, 60, 120))
    in_day = sum(n for m, n in recent if m > now - timedelta(days=1))
    return Demand(
        claims=claims,
        day=round(rate * 1440) + in_day,
        claims_hour=claims[3],
        first_at=now - timedelta(days=3),
        ready_p90_seconds=p90,
        ready_mean_seconds=mean,
        ready_samples=20,
        busy_minutes=recent,
    )


def busy(*minutes: tuple[datetime, int], day: int = 144) -> Demand:
    return Demand(day=day, first_at=NOW - timedelta(days=3), busy_minutes=tuple(minutes))


@pytest.mark.parametrize(
    ("demand_", "expected"),
    [
        # two busy minutes in a row: one burst, from the start of the first to the end of the last
        (busy((at(9), 15), (at(9, 1), 15)), [Burst(at(9), at(9, 2), 30)]),
        # one quiet minute between busy ones still joins them
        (busy((at(9), 15), (at(9, 2), 15)), [Burst(at(9), at(9, 3), 30)]),
        # two quiet minutes split them, and each is a burst of its own
        (busy((at(9), 15), (at(9, 3), 15)), [Burst(at(9), at(9, 1), 15), Burst(at(9, 3), at(9, 4), 15)]),
        # too few claims for a burst
        (busy((at(9), 3), (at(9, 1), 3), (at(9, 2), 3)), []),
        # a cluster ends after 10 minutes: the first ten minutes are a burst, the rest (6 claims) not
        (busy(*((at(9, i), 3) for i in range(12))), [Burst(at(9), at(9, 10), 30)]),
        # a background of 4/min: 30 claims in two minutes are not far above it (5 x 4 x 2 = 40)
        (busy((at(9), 15), (at(9, 1), 15), day=4 * 1440), []),
    ],
)
def test_bursts_table(demand_: Demand, expected: list[Burst]) -> None:
    assert bursts(demand_) == expected


def test_no_forecast_before_two_intervals_agree() -> None:
    assert burst_forecast(demand(starts=(at(6), at(9))), NOW) is None  # one interval: a coincidence maybe
    assert burst_forecast(demand(starts=(at(3), at(6), at(9))), NOW) is not None
    # intervals that disagree (30 minutes, then 5h30m): not a pattern, whatever the number of bursts
    assert burst_forecast(demand(starts=(at(3), at(3, 30), at(9))), NOW) is None
    # more often than every 30 minutes is a rate, which the windows see
    assert burst_forecast(demand(starts=(at(11), at(11, 20), at(11, 40)), now=at(11, 50)), at(11, 50)) is None


def test_forecast_window_and_size() -> None:
    f = burst_forecast(demand(starts=(at(3), at(6), at(9))), NOW)
    assert f is not None
    margin = timedelta(hours=3) * 0.2 / math.sqrt(2)  # no spread yet: a fifth of the period, over sqrt(2)
    assert (f.earliest, f.latest) == (at(12) - margin, at(12) + margin)
    assert (f.size, f.period, f.last.start) == (30, timedelta(hours=3), at(9))
    # with spread, the window spans the intervals seen and widens by the spread over sqrt(n)
    g = burst_forecast(demand(starts=(at(0), at(2, 30), at(6), at(9))), NOW)
    assert g is not None
    spread = timedelta(hours=3, minutes=30) - timedelta(hours=2, minutes=30)
    assert g.earliest == at(9) + timedelta(hours=2, minutes=30) - spread / math.sqrt(3)
    assert g.latest == at(9) + timedelta(hours=3, minutes=30) + spread / math.sqrt(3)
    # the size is the largest of the latest three bursts
    h = burst_forecast(demand(starts=(at(3), at(6), at(9)), size=24), NOW)
    assert h is not None and h.size == 24


def test_an_unfinished_burst_is_not_the_last_one() -> None:
    """While a burst arrives the window it was expected in still holds (pre-warming goes on), and only once it
    has ended does the forecast move one period on."""
    starts = (at(3), at(6), at(9), at(11, 58))
    during = burst_forecast(demand(starts=starts), NOW)
    assert during is not None and during.last.start == at(9)
    after = burst_forecast(demand(starts=starts, now=NOW + 5 * MIN), NOW + 5 * MIN)
    assert after is not None and after.last.start == at(11, 58)


def test_pre_warms_one_lead_time_before_the_earliest_start_until_the_latest() -> None:
    starts = (at(3), at(6), at(9))
    f = burst_forecast(demand(starts=starts), NOW)
    assert f is not None
    base = base_stock_size(0.1, MEAN, 0.95)
    lead = timedelta(seconds=P90)

    def target(now: datetime) -> int:
        return decide(DEFAULT, demand(starts=starts, now=now), None, now=now, scheduled=1).target

    assert target(f.earliest - lead - MIN) == base
    assert target(f.earliest - lead + MIN) == 30 + base
    assert target(f.latest - MIN) == 30 + base
    assert target(f.latest + MIN) == base  # the window passed without a burst
    d = decide(DEFAULT, demand(starts=starts), None, now=NOW, scheduled=1)
    assert d.reason == (
        "autoscale: 0.1 claims/min, ready mean 4m36s, p90 8m, target 95%; pre-warming 33 for a burst of 30 "
        "expected 11:34–12:25 (every 3h, last at 09:00)"
    )
    early = decide(DEFAULT, demand(starts=starts, now=at(10)), None, now=at(10), scheduled=1)
    assert early.reason.endswith("; next burst of 30 expected 11:34–12:25 (every 3h, last at 09:00)")
    assert recommended(demand(starts=starts), NOW, DEFAULT) == 33  # the recommendation says the same


def test_learnt_bursts_are_left_out_of_the_rate_windows() -> None:
    """The burst that just passed is served by the pre-warming, not by a base stock its size for hours."""
    now = at(9, 6)
    learnt = estimate(demand(starts=(at(3), at(6), at(9)), now=now), now, 0.95)
    assert learnt is not None and learnt.recent_rate == pytest.approx(0.1, abs=0.02)
    one_off = estimate(demand(starts=(at(9),), now=now), now, 0.95)  # no pattern: it is demand like any other
    assert one_off is not None and one_off.recent_rate > 1


@pytest.mark.parametrize(("lo", "hi", "expected"), [(1, 20, 20), (40, 50, 40), (1, 40, 33)])
def test_pre_warming_is_bounded_by_min_and_max(lo: int, hi: int, expected: int) -> None:
    cfg = AutoscaleSettings(min=lo, max=hi)
    assert decide(cfg, demand(starts=(at(3), at(6), at(9))), None, now=NOW, scheduled=1).target == expected


def test_no_pre_warming_while_backing_off() -> None:
    state = AutoscaleState(3, NOW - timedelta(hours=1), NOW - timedelta(hours=1))
    d = demand(starts=(at(3), at(6), at(9)))
    held = decide(DEFAULT, d, state, now=NOW, scheduled=1, may_scale_up=False)
    assert held.target == 3 and held.state == state
    assert "pre-warming 33" in held.reason and held.reason.endswith("(no scale-up while backing off)")
    assert decide(DEFAULT, d, None, now=NOW, scheduled=1, may_scale_up=False).target == 1


def test_released_through_the_stabilization_window() -> None:
    starts = (at(3), at(6), at(9), at(12))
    now = at(12, 10)  # the burst has come: the next is three hours away
    d = demand(starts=starts, now=now)
    recent = AutoscaleState(33, now - 5 * MIN, now - 5 * MIN)
    assert decide(DEFAULT, d, recent, now=now, scheduled=1).target == 33  # raised 5 minutes ago: held
    long_ago = AutoscaleState(33, now - timedelta(minutes=50), now - timedelta(minutes=50))
    stepped = decide(DEFAULT, d, long_ago, now=now, scheduled=1)
    assert stepped.target == 33 - math.ceil(33 * 0.25)  # one bounded step at a time


PATTERN = st.tuples(
    st.integers(min_value=31, max_value=600),  # period, minutes
    st.lists(st.integers(min_value=-10, max_value=10), min_size=3, max_size=8),  # jitter of each burst
    st.integers(min_value=0, max_value=700),  # minutes since the last burst
    st.integers(min_value=10, max_value=60),  # burst size
)


def patterned(pattern: tuple[int, list[int], int, int], rate: float, lead: float) -> tuple[Demand, datetime]:
    period, jitter, since, size = pattern
    now = NOW
    last = now - timedelta(minutes=since)
    starts = tuple(
        last - timedelta(minutes=period * k + j) for k, j in zip(range(len(jitter)), jitter, strict=True)
    )
    return demand(rate, starts, size=size, now=now, mean=lead * 0.6, p90=lead), now


@settings(max_examples=200, deadline=None)
@given(
    PATTERN,
    st.floats(min_value=0, max_value=1.5),
    st.floats(min_value=0, max_value=1.5),
    st.floats(min_value=30, max_value=900),
)
def test_monotone_in_rate_with_bursts(
    pattern: tuple[int, list[int], int, int], a: float, b: float, lead: float
) -> None:
    lo, hi = sorted((a, b))
    d_lo, now = patterned(pattern, lo, lead)
    d_hi, _ = patterned(pattern, hi, lead)
    # A spike is a burst relative to the background (BURST_FACTOR): monotone for the same bursts seen; across
    # that edge a stronger background turns a spike into rate (test_a_stronger_background_can_unlearn_a_spike).
    assume(bursts(d_lo) == bursts(d_hi))
    t_lo = decide(DEFAULT, d_lo, None, now=now, scheduled=1).target
    t_hi = decide(DEFAULT, d_hi, None, now=now, scheduled=1).target
    assert t_lo <= t_hi


def test_a_stronger_background_can_unlearn_a_spike() -> None:
    # The edge the monotone property leaves out, found by it: spikes of 10 claims in 2 minutes every 31 minutes
    # are bursts over a quiet pool (pre-warmed: 11), but at 1 claim a minute they are 5/min over a 1/min
    # background, under BURST_FACTOR, so they are rate like any other, and the base stock is 3. The pool is
    # then not monotone in the background rate: the known limit of a detection relative to the background.
    starts = tuple(NOW - timedelta(minutes=27 + 31 * k) for k in range(3))
    quiet = demand(0.0, starts, size=10, mean=18, p90=30)
    busy_pool = demand(1.0, starts, size=10, mean=18, p90=30)
    assert len(bursts(quiet)) == 3 and bursts(busy_pool) == []
    assert decide(DEFAULT, quiet, None, now=NOW, scheduled=1).target == 11
    assert decide(DEFAULT, busy_pool, None, now=NOW, scheduled=1).target == 3


@settings(max_examples=200, deadline=None)
@given(
    PATTERN,
    st.floats(min_value=0, max_value=1.5),
    st.floats(min_value=30, max_value=900),
    st.floats(min_value=30, max_value=900),
)
def test_monotone_in_lead_time_with_bursts(
    pattern: tuple[int, list[int], int, int], rate: float, a: float, b: float
) -> None:
    lo, hi = sorted((a, b))
    d_lo, now = patterned(pattern, rate, lo)
    d_hi, _ = patterned(pattern, rate, hi)
    assert (
        decide(DEFAULT, d_lo, None, now=now, scheduled=1).target
        <= decide(DEFAULT, d_hi, None, now=now, scheduled=1).target
    )


@settings(max_examples=200, deadline=None)
@given(
    PATTERN,
    st.floats(min_value=0, max_value=3),
    st.integers(min_value=0, max_value=50),
    st.integers(min_value=0, max_value=50),
    st.integers(min_value=0, max_value=60),
    st.booleans(),
)
def test_bounds_hold_with_bursts(
    pattern: tuple[int, list[int], int, int], rate: float, x: int, y: int, prev: int, up: bool
) -> None:
    lo, hi = sorted((x, max(y, 1)))
    cfg = AutoscaleSettings(min=lo, max=max(hi, lo, 1))
    d, now = patterned(pattern, rate, 480)
    state = AutoscaleState(prev, now - timedelta(hours=1), now - timedelta(hours=1))
    first = decide(cfg, d, None, now=now, scheduled=cfg.min, may_scale_up=up)
    assert cfg.min <= first.target <= cfg.max
    later = decide(cfg, d, state, now=now, scheduled=cfg.min, may_scale_up=up)
    if not up:  # backing off: never above the previous target, pre-warming or not
        assert later.target <= prev
    if cfg.min <= prev <= cfg.max:
        assert cfg.min <= later.target <= cfg.max
