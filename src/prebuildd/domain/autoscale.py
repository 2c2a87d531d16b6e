"""The base-stock autoscaler (SPEC §5.2), pure: from a pool's demand (claims plus misses, time to ready) to the
number of prebuilds that makes a claim find one ready with the requested probability.

Model: claims arrive as a Poisson process of rate λ; each claim takes a prebuild and the reconciler starts its
replacement at once, which is eligible after the lead time L. With a pool of S that is an (S−1, S) base-stock
policy, and a claim misses exactly when all S prebuilds are being replaced, i.e. when at least S claims arrived
in the last L. The hit rate is P(Poisson(λ·L) ≤ S−1); the size is the smallest S reaching the target.

L is the mean time to ready of recent prebuilds: the number of replacements in flight is Poisson with mean λ·E[L]
whatever the distribution of build times (an M/G/∞ queue, Palm's theorem), so the mean gives the requested hit rate
exactly when replacements start at once. ``lead_time = "p90"`` adds a margin for what the model leaves out
(daemons queueing, builds getting slower), at 38-56% more idle prebuilds (bench/autoscale_sim.py, BENCHMARKS.md).

Recurring bursts (many claims within minutes, far above the background rate, at a regular interval) are not
Poisson: no rate window sees one in time. They are learnt from the busy minutes of the last three days: once
``BURST_MIN_INTERVALS`` intervals agree, the pool is pre-warmed to the burst's size one lead time before the
earliest expected next burst, until it has come or its window has passed, and the rate windows leave the learnt
bursts out (they are served by the pre-warming, not by the base stock).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

WINDOWS = (5, 10, 30, 60, 120)
"""Minutes of the demand windows (also the expression's ``claims_Nm`` variables)."""

MIN_SAMPLES = 20
"""Fewer claims plus misses than this over the last day: too little data, the pool keeps ``instances``."""
MIN_HISTORY = timedelta(minutes=30)
WEEK = timedelta(days=7)
MAX_SIZE = 1000
DEFAULT_STABILIZATION = timedelta(minutes=10)
STEP_INTERVAL = timedelta(minutes=1)
"""Scale-down steps are at least this far apart."""
LEAD_TIMES = ("mean", "p90")
DEFAULT_LEAD = timedelta(minutes=5)
"""L while no prebuild of the pool has become ready in the last week (e.g. ``instances = 0`` with every claim a
miss): without it such a pool would never be sized, since only prebuilds measure a time to ready."""
DAY = timedelta(days=1)
PAST_DAYS = 7
"""The same time of day is averaged over at most this many past days."""
STEP_FRACTION = 0.25
"""A scale-down step removes at most this share of the pool (at least one prebuild)."""

BURST_LOOKBACK = timedelta(days=3)
"""How far back the snapshot reads busy minutes (bursts are learnt from these): three bursts of a daily pattern fit
in it, so periods up to a day are learnt."""
BURST_MINUTE = 3
"""A minute with at least this many claims plus misses is busy (the snapshot reads only those, newest first)."""
BURST_MAX_MINUTES = 500
"""At most this many busy minutes are read per pool (a bounded row whatever the load)."""
BURST_MIN_SIZE = 10
"""A burst: busy minutes at most one quiet minute apart, within ``BURST_SPAN``, holding at least this many claims
and at least ``BURST_FACTOR`` times what the past day's average rate would bring in as long."""
BURST_SPAN = timedelta(minutes=10)
BURST_FACTOR = 5.0
BURST_MIN_INTERVALS = 2
"""Bursts must have recurred this many times (three bursts) at consistent intervals before the pool is pre-warmed
for the next: one interval could be a coincidence of two unrelated spikes, two that agree are a pattern."""
BURST_HISTORY = 12
"""The period and the size are learnt from at most this many recent bursts (a changed pattern is learnt anew)."""
BURST_MIN_PERIOD = timedelta(minutes=30)
"""Spikes recurring more often than this are a rate, which the windows see."""
BURST_SPREAD = 2.0
"""Intervals agree when the longest is at most this many times the shortest."""
BURST_MARGIN = 0.2
"""The expected window is the range of the intervals seen, widened on both sides by the larger of that range and
this share of the period, divided by the square root of the number of intervals: wide while the pattern is young,
tighter once it is well known. The range of n intervals alone misses the next one with probability 2/(n+1)."""
BURST_SIZES = 3
"""The pre-warmed size is the largest of this many latest bursts."""


@dataclass(frozen=True)
class AutoscaleSettings:
    min: int = 0
    max: int = 20
    target_hit_rate: float = 0.95
    stabilization_seconds: int = int(DEFAULT_STABILIZATION.total_seconds())
    lead_time: str = "mean"
    """Which time to ready is L: ``mean`` (exact for the hit rate, see the module docstring) or ``p90`` (a margin on
    top of the target for what the model leaves out: daemons queueing, slower builds)."""

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "min": self.min,
            "max": self.max,
            "target_hit_rate": self.target_hit_rate,
            "stabilization_seconds": self.stabilization_seconds,
            "lead_time": self.lead_time,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> AutoscaleSettings:
        def number(key: str, default: float) -> float:
            value = data.get(key, default)
            return float(value) if isinstance(value, int | float) else default

        base = cls()
        return cls(
            min=int(number("min", base.min)),
            max=int(number("max", base.max)),
            target_hit_rate=number("target_hit_rate", base.target_hit_rate),
            stabilization_seconds=int(number("stabilization_seconds", base.stabilization_seconds)),
            lead_time=str(data.get("lead_time", base.lead_time)),
        )


def settings_problems(settings: AutoscaleSettings) -> list[tuple[str, str]]:
    """(key, reason) of every out-of-range autoscale setting, in key order."""
    found: list[tuple[str, str]] = []
    if not 0 <= settings.min <= MAX_SIZE:
        found.append(("min", f"must be between 0 and {MAX_SIZE}, got {settings.min}"))
    if not 1 <= settings.max <= MAX_SIZE:
        found.append(("max", f"must be between 1 and {MAX_SIZE}, got {settings.max}"))
    elif settings.max < settings.min:
        found.append(("max", f"must be >= min ({settings.min}), got {settings.max}"))
    if not (math.isfinite(settings.target_hit_rate) and 0 < settings.target_hit_rate < 1):
        found.append(("target_hit_rate", f"must be above 0 and below 1, got {settings.target_hit_rate}"))
    if not 0 <= settings.stabilization_seconds <= 24 * 3600:
        found.append(("stabilization", f"must be between 0s and 24h, got {settings.stabilization_seconds}s"))
    if settings.lead_time not in LEAD_TIMES:
        found.append(("lead_time", f"must be one of {', '.join(LEAD_TIMES)}, got {settings.lead_time!r}"))
    return found


@dataclass(frozen=True)
class Demand:
    """A pool's demand as the snapshot reads it (aggregated in SQL)."""

    claims: tuple[int, ...] = (0, 0, 0, 0, 0)
    """Claims in each of ``WINDOWS``."""
    misses: tuple[int, ...] = (0, 0, 0, 0, 0)
    day: int = 0
    """Claims plus misses over the last day."""
    claims_hour: int = 0
    first_at: datetime | None = None
    """The oldest demand record kept (35 days at most)."""
    weekly_next_15m: int = 0
    """Claims plus misses in the 15 minutes after this time of the week, summed over the 4 past weeks."""
    weekly_next_60m: int = 0
    daily_next_15m: int = 0
    """Claims plus misses in the 15 minutes after this time of day, summed over the 7 past days."""
    daily_next_60m: int = 0
    ready_p90_seconds: float | None = None
    ready_mean_seconds: float | None = None
    ready_samples: int = 0
    busy_minutes: tuple[tuple[datetime, int], ...] = ()
    """(minute, claims plus misses) of the busy minutes (``BURST_MINUTE`` or more) of ``BURST_LOOKBACK``, oldest
    first: what bursts are learnt from."""

    def count(self, minutes: int) -> int:
        i = WINDOWS.index(minutes)
        return self.claims[i] + self.misses[i]

    def rate(self, minutes: int) -> float:
        """Claims plus misses per minute over the window."""
        return self.count(minutes) / minutes

    def hit_rate_hour(self) -> float | None:
        total = self.count(60)
        return None if total == 0 else self.claims[WINDOWS.index(60)] / total

    def weeks(self, now: datetime) -> int:
        """Past weeks with history at this time of the week (0 to 4)."""
        if self.first_at is None:
            return 0
        return max(0, min(4, int((now - self.first_at) / WEEK)))

    def days(self, now: datetime) -> int:
        """Past days with history at this time of day (0 to 7)."""
        if self.first_at is None:
            return 0
        return max(0, min(PAST_DAYS, int((now - self.first_at) / DAY)))


@dataclass(frozen=True)
class Estimate:
    rate: float
    """λ used for the size, claims per minute: the higher of the recent and the seasonal estimate."""
    recent_rate: float
    weekly_rate: float | None
    """The seasonal estimate: the same time of the week (or, under a week of history, of the day) in the past."""
    lead_seconds: float
    """L: the mean (or the p90, as configured) time to ready; ``DEFAULT_LEAD`` while none is measured."""
    p90_seconds: float
    size: int
    """The formula's size, before clamping."""
    lead_time: str = "mean"
    """Which figure ``lead_seconds`` is: ``mean``, or ``p90`` (configured, or no mean measured)."""
    seasonal: str = "none"
    """Where ``weekly_rate`` comes from: ``week``, ``day`` or ``none`` (too little history)."""
    measured: bool = True
    """False: no time to ready measured yet, L is ``DEFAULT_LEAD``."""
    burst: BurstForecast | None = None
    """The next burst of a learnt recurring pattern."""
    prewarm: int = 0
    """The size pre-warmed for ``burst`` now (0: not pre-warming)."""

    @property
    def wanted(self) -> int:
        """The size the estimate asks for: the base stock, or the pre-warmed burst while one is expected."""
        return max(self.size, self.prewarm)

    def describe(self, target_hit_rate: float, now: datetime | None = None) -> str:
        if not self.measured:
            ready = f"ready time {_duration(self.lead_seconds)} (default: none measured yet)"
        elif self.lead_time == "p90":
            ready = f"ready p90 {_duration(self.p90_seconds)}"
        else:
            ready = f"ready mean {_duration(self.lead_seconds)}, p90 {_duration(self.p90_seconds)}"
        ahead = ""
        if self.weekly_rate is not None and self.rate > self.recent_rate:
            ahead = (
                f" (past {self.seasonal}s at this time: {self.weekly_rate:.2g}, now {self.recent_rate:.2g})"
            )
        text = f"autoscale: {self.rate:.2g} claims/min{ahead}, {ready}, target {target_hit_rate:.0%}"
        if self.burst is not None and now is not None:
            text += f"; {self.burst.describe(self.prewarm, now, timedelta(seconds=self.p90_seconds))}"
        return text


def insufficient(demand: Demand, now: datetime) -> str | None:
    """Why there is too little data for an estimate, or None."""
    if demand.first_at is None or demand.day < MIN_SAMPLES:
        return f"{demand.day} claims+misses in the last day (needs {MIN_SAMPLES})"
    if now - demand.first_at < MIN_HISTORY:
        return f"history of {_duration((now - demand.first_at).total_seconds())} (needs 30m)"
    return None


SIGNIFICANCE = 3.0
"""How many Poisson standard deviations a short window must stray from the long-run rate to be believed. The test
runs every cycle on three windows, so a looser one fires on noise: at 2 the 10-minute window of a steady pool
departs several times a day, and each false rise is held for the stabilization window (on the steady trace of
bench/autoscale_sim.py, about 8% more idle prebuild-hours than the best static pool at 2, 2-3% at 3). A real rise (0.05 to 2 claims a minute) still shows after
four claims."""


def recent_rate(demand: Demand) -> float:
    """The rate of the last two hours, unless a shorter window (10, 30, then 60 minutes, shortest first) departs
    from it by more than Poisson noise: then that window's rate. A steady pool is sized from the long window (the
    max of noisy short windows would over-provision it by a fifth, measured in bench/autoscale_sim.py), a rise or
    a fall shows within minutes.

    The newer evidence bounds the older: a longer window's rise is believed only up to what the shorter windows
    inside it still show, and the long-run rate only up to the highest of them. Without this a pool with no more
    claims would be raised again as its windows empty one after the other (the 10-minute window stops departing
    while the 30-minute one, holding more of the old load, still does)."""
    long_run = demand.rate(120)
    shorter: list[float] = []
    for minutes in (10, 30, 60):
        rate = demand.rate(minutes)
        if _departs(demand.count(minutes), long_run * minutes):
            if rate > long_run and shorter:
                rate = min(rate, max(long_run, min(shorter)))
            return rate
        shorter.append(rate)
    return min(long_run, max(shorter))


def _departs(count: float, expected: float) -> bool:
    """True when ``count`` events stray from the ``expected`` mean by more than Poisson noise."""
    return abs(count - expected) > SIGNIFICANCE * math.sqrt(max(expected, 0.0)) + 1


def _ahead(next_15m: int, next_60m: int, periods: int) -> tuple[int, int]:
    """(events, minutes observed) for the coming minutes from ``periods`` past periods: the coming hour's, unless
    the coming 15 minutes depart from it by more than noise (a rise one lead time ahead): then theirs. Taking
    the maximum of the two would size a steady pool from the noise of the short window."""
    if _departs(next_15m, next_60m / 4):
        return next_15m, 15 * periods
    return next_60m, 60 * periods


def weekly_ahead(demand: Demand, now: datetime) -> tuple[int, int] | None:
    """The coming minutes at this time of the week over the past weeks (None: under a week of history)."""
    weeks = demand.weeks(now)
    return None if weeks == 0 else _ahead(demand.weekly_next_15m, demand.weekly_next_60m, weeks)


def daily_ahead(demand: Demand, now: datetime) -> tuple[int, int] | None:
    """The same for the time of day over the past days (None: under a day of history)."""
    days = demand.days(now)
    return None if days == 0 else _ahead(demand.daily_next_15m, demand.daily_next_60m, days)


def seasonal_rate(demand: Demand, now: datetime, recent: float) -> tuple[float | None, str, bool]:
    """The rate expected in the coming minutes from the past, where it comes from, and whether it is believed
    over ``recent``. The same time of the week once a week of history exists (it knows weekends), otherwise the
    same time of day (a workday's 9:00 rise is anticipated from the second day on). It is believed only when it
    is above the recent rate by more than the noise of its own count: the maximum of two noisy estimates of the
    same steady rate would over-provision a steady pool."""
    kind = "week"
    seen = weekly_ahead(demand, now)
    if seen is None:
        kind, seen = "day", daily_ahead(demand, now)
    if seen is None:
        return None, "none", False
    count, minutes = seen
    rate = count / minutes
    return rate, kind, rate > recent and _departs(count, recent * minutes)


@dataclass(frozen=True)
class Burst:
    """A cluster of busy minutes: from the start of its first to the end of its last, and its claims plus misses."""

    start: datetime
    end: datetime
    size: int


@dataclass(frozen=True)
class BurstForecast:
    """The next burst of a recurring pattern: its size and the window in which it is expected to start."""

    size: int
    earliest: datetime
    latest: datetime
    period: timedelta
    """The mean interval between the bursts seen."""
    last: Burst
    bursts: tuple[Burst, ...]
    """The bursts it was learnt from (they are left out of the rate windows)."""

    def active(self, now: datetime, lead: timedelta) -> bool:
        """Pre-warm now: from one lead time before the earliest start until the latest (a burst that has come is
        the latest of a new forecast, whose window is one period further)."""
        return self.earliest - lead <= now <= self.latest

    def describe(self, target: int, now: datetime, lead: timedelta) -> str:
        window = f"{self.earliest:%H:%M}–{self.latest:%H:%M}"
        seen = f"every {_duration(self.period.total_seconds())}, last at {self.last.start:%H:%M}"
        if self.active(now, lead):
            return f"pre-warming {target} for a burst of {self.size} expected {window} ({seen})"
        return f"next burst of {self.size} expected {window} ({seen})"


def bursts(demand: Demand) -> list[Burst]:
    """The bursts in the busy minutes, oldest first: clusters of busy minutes at most one quiet minute apart,
    within ``BURST_SPAN``, far above the past day's average rate (``BURST_FACTOR``) and of ``BURST_MIN_SIZE`` or
    more. A steady rate, even a high one, rarely fills several minutes in a row at many times its mean."""
    background = demand.day / 1440
    clusters: list[list[tuple[datetime, int]]] = []
    for minute, count in demand.busy_minutes:
        last = clusters[-1] if clusters else None
        if (
            last is not None
            and minute - last[-1][0] <= 2 * _MINUTE
            and minute + _MINUTE - last[0][0] <= BURST_SPAN
        ):
            last.append((minute, count))
        else:
            clusters.append([(minute, count)])
    out: list[Burst] = []
    for cluster in clusters:
        start, end = cluster[0][0], cluster[-1][0] + _MINUTE
        size = sum(c for _, c in cluster)
        if size >= BURST_MIN_SIZE and size >= BURST_FACTOR * background * (end - start) / _MINUTE:
            out.append(Burst(start, end, size))
    return out


def burst_forecast(demand: Demand, now: datetime) -> BurstForecast | None:
    """The next burst, once bursts have recurred ``BURST_MIN_INTERVALS`` times at consistent intervals (None:
    no such pattern). Only finished bursts count (one whose minutes may still grow is the burst being served):
    while a burst arrives the window it was expected in still holds."""
    done = [b for b in bursts(demand) if now >= b.end + 2 * _MINUTE][-BURST_HISTORY:]
    # The newest run of consistent intervals: an older pattern (another period) is not mixed in.
    run = done[-1:]
    for b in reversed(done[:-1]):
        gaps = [later.start - earlier.start for earlier, later in itertools.pairwise([b, *run])]
        if min(gaps) < BURST_MIN_PERIOD or max(gaps) > BURST_SPREAD * min(gaps):
            break
        run.insert(0, b)
    intervals = [later.start - earlier.start for earlier, later in itertools.pairwise(run)]
    if len(intervals) < BURST_MIN_INTERVALS:
        return None
    n = len(intervals)
    lo, hi = min(intervals), max(intervals)
    period = sum(intervals, timedelta()) / n
    margin = max(hi - lo, period * BURST_MARGIN) / math.sqrt(n)
    last = run[-1]
    size = max(b.size for b in run[-BURST_SIZES:])
    return BurstForecast(size, last.start + lo - margin, last.start + hi + margin, period, last, tuple(run))


def _without_bursts(demand: Demand, learnt: tuple[Burst, ...], now: datetime) -> Demand:
    """The demand with the learnt bursts' minutes left out of the rate windows: the pre-warming serves them, and
    a burst counted as a rate would hold a base stock its size for hours after it has passed."""
    if not learnt:
        return demand
    minutes = [(m, c) for m, c in demand.busy_minutes if any(b.start <= m < b.end for b in learnt)]
    claims, misses = list(demand.claims), list(demand.misses)
    for i, w in enumerate(WINDOWS):
        extra = sum(c for m, c in minutes if m + _MINUTE > now - timedelta(minutes=w))
        from_misses = min(extra, misses[i])
        misses[i] -= from_misses
        claims[i] = max(0, claims[i] - (extra - from_misses))
    return replace(demand, claims=tuple(claims), misses=tuple(misses))


_MINUTE = timedelta(minutes=1)


def base_stock_size(rate_per_minute: float, lead_seconds: float, target_hit_rate: float) -> int:
    """The smallest S with P(Poisson(λ·L) ≤ S−1) ≥ target_hit_rate (at most ``MAX_SIZE``)."""
    mean = max(rate_per_minute, 0.0) * max(lead_seconds, 0.0) / 60.0
    cdf = 0.0
    log_pmf = -mean  # log P(X = 0); summed in log space so that a large mean does not underflow
    for k in range(MAX_SIZE):
        cdf += math.exp(log_pmf)
        if cdf >= target_hit_rate - 1e-12:
            return k + 1
        log_pmf += math.log(mean) - math.log(k + 1) if mean > 0 else -math.inf
    return MAX_SIZE


def lead_seconds(demand: Demand, lead_time: str = "mean") -> float:
    """L: the mean (or the p90) time to ready of the pool's recent prebuilds, ``DEFAULT_LEAD`` with none."""
    if demand.ready_p90_seconds is None:
        return DEFAULT_LEAD.total_seconds()
    if lead_time == "mean" and demand.ready_mean_seconds is not None:
        return demand.ready_mean_seconds
    return demand.ready_p90_seconds


def estimate(
    demand: Demand, now: datetime, target_hit_rate: float, lead_time: str = "mean"
) -> Estimate | None:
    if insufficient(demand, now) is not None:
        return None
    forecast = burst_forecast(demand, now)
    rates = _without_bursts(demand, forecast.bursts, now) if forecast is not None else demand
    recent = recent_rate(rates)
    seasonal, kind, ahead = seasonal_rate(rates, now, recent)
    rate = seasonal if ahead and seasonal is not None else recent
    lead = lead_seconds(demand, lead_time)
    measured = demand.ready_p90_seconds is not None
    p90 = demand.ready_p90_seconds if demand.ready_p90_seconds is not None else lead
    used = "mean" if lead_time == "mean" and demand.ready_mean_seconds is not None else "p90"
    size = base_stock_size(rate, lead, target_hit_rate)
    prewarm = 0
    # Every prebuild of the burst must be ready when it starts: the pre-warming leads by the p90, not the mean.
    if forecast is not None and forecast.active(now, timedelta(seconds=p90)):
        prewarm = min(
            forecast.size + size, MAX_SIZE
        )  # the burst, plus the base stock for the claims around it
    return Estimate(rate, recent, seasonal, lead, p90, size, used, kind, measured, forecast, prewarm)


@dataclass(frozen=True)
class AutoscaleState:
    """What the autoscaler decided last, stored so that every replica and restart continues from it."""

    target: int
    raised_at: datetime
    changed_at: datetime


@dataclass(frozen=True)
class Decision:
    target: int
    state: AutoscaleState | None
    """The state to store (None: nothing decided, e.g. too little data)."""
    estimate: Estimate | None
    reason: str
    """For ``explain``: 'autoscale: 0.8 claims/min, ready mean 3m20s, p90 4m10s, target 95%'."""
    fallback: bool = False


def decide(
    settings: AutoscaleSettings,
    demand: Demand,
    previous: AutoscaleState | None,
    *,
    now: datetime,
    scheduled: int,
    schedule_floor: int | None = None,
    may_scale_up: bool = True,
) -> Decision:
    """The pool's target: immediate scale-up, scale-down after the stabilization window by bounded steps.

    ``scheduled`` is the target without autoscale (instances or the schedule's), the fallback with too little
    data; ``schedule_floor`` is the matching schedule's target, a floor for its hours. ``may_scale_up`` is False
    while the preset backs off or is hard-limited: more prebuilds would only fail the same way.
    """
    est = estimate(demand, now, settings.target_hit_rate, settings.lead_time)
    if est is None:
        why = insufficient(demand, now) or "no estimate"
        return Decision(
            scheduled, previous, None, f"autoscale: too little data ({why}), using {scheduled}", True
        )
    wanted = min(max(est.wanted, settings.min), settings.max)
    if schedule_floor is not None:
        wanted = max(wanted, schedule_floor)
    reason = est.describe(settings.target_hit_rate, now)
    if previous is None:
        target = wanted if may_scale_up else min(wanted, scheduled)
        return Decision(target, AutoscaleState(target, now, now), est, reason)
    prev = previous.target
    if wanted > prev:
        if not may_scale_up:
            return Decision(prev, previous, est, f"{reason}; holding {prev} (no scale-up while backing off)")
        return Decision(wanted, AutoscaleState(wanted, now, now), est, reason)
    ceiling = max(settings.max, schedule_floor or 0)
    if wanted == prev:
        return Decision(prev, previous, est, reason)
    if prev > ceiling:  # the bounds were lowered: obey them at once
        return Decision(ceiling, AutoscaleState(ceiling, previous.raised_at, now), est, reason)
    window = timedelta(seconds=settings.stabilization_seconds)
    if now - previous.raised_at < window:
        left = _duration((previous.raised_at + window - now).total_seconds())
        return Decision(prev, previous, est, f"{reason}; holding {prev} for {left} (stabilization)")
    if now - previous.changed_at < STEP_INTERVAL:
        return Decision(prev, previous, est, f"{reason}; stepping down to {wanted}")
    step = max(1, math.ceil(prev * STEP_FRACTION))
    target = max(wanted, prev - step)
    note = reason if target == wanted else f"{reason}; stepping down to {wanted}"
    return Decision(target, AutoscaleState(target, previous.raised_at, now), est, note)


def recommended(demand: Demand, now: datetime, settings: AutoscaleSettings | None = None) -> int | None:
    """The formula's size for a pool that has demand data, autoscale on or not (None: too little data): at the
    pool's autoscale settings, or 95% hits."""
    cfg = settings or AutoscaleSettings()
    est = estimate(demand, now, cfg.target_hit_rate, cfg.lead_time)
    return None if est is None else min(est.wanted, MAX_SIZE)


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s" if s else f"{m}m"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if m else f"{h}h"
