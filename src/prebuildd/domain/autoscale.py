"""The base-stock autoscaler (SPEC §5.2), pure: from a pool's demand (claims plus misses, time to ready) to the
number of prebuilds that makes a claim find one ready with the requested probability.

Model: claims arrive as a Poisson process of rate λ; each claim takes a prebuild and the reconciler starts its
replacement at once, which is eligible after the lead time L. With a pool of S that is an (S−1, S) base-stock
policy, and a claim misses exactly when all S prebuilds are being replaced, i.e. when at least S claims arrived
in the last L. The hit rate is P(Poisson(λ·L) ≤ S−1); the size is the smallest S reaching the target.

The number of replacements in flight is Poisson with mean λ·E[L] whatever the distribution of L (an M/G/∞ queue,
Palm's theorem), so L is the *mean* time to ready by default. SPEC §5.2 says p90: that is available
(``lead_time = "p90"``) as a margin on top of the target, and costs about a third more idle prebuilds
(bench/autoscale_sim.py, BENCHMARKS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
STEP_FRACTION = 0.25
"""A scale-down step removes at most this share of the pool (at least one prebuild)."""


@dataclass(frozen=True)
class AutoscaleSettings:
    min: int = 0
    max: int = 20
    target_hit_rate: float = 0.95
    stabilization_seconds: int = int(DEFAULT_STABILIZATION.total_seconds())
    lead_time: str = "mean"
    """Which time to ready is L: ``mean`` (exact for the model, see ``base_stock_size``) or ``p90`` (a margin on
    top of the target hit rate: about a third more prebuilds when builds vary like median 4m, p90 8m)."""

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
    ready_p90_seconds: float | None = None
    ready_mean_seconds: float | None = None
    ready_samples: int = 0

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


@dataclass(frozen=True)
class Estimate:
    rate: float
    """λ used for the size, claims per minute: the higher of the recent and the weekly estimate."""
    recent_rate: float
    weekly_rate: float | None
    lead_seconds: float
    """L: the mean (or p90, as configured) time to ready."""
    p90_seconds: float
    size: int
    """The formula's size, before clamping."""
    lead_time: str = "mean"

    def describe(self, target_hit_rate: float) -> str:
        if self.lead_time == "p90":
            ready = f"ready p90 {_duration(self.p90_seconds)}"
        else:
            ready = f"ready mean {_duration(self.lead_seconds)}, p90 {_duration(self.p90_seconds)}"
        return f"autoscale: {self.rate:.2g} claims/min, {ready}, target {target_hit_rate:.0%}"


def insufficient(demand: Demand, now: datetime) -> str | None:
    """Why there is too little data for an estimate, or None."""
    if demand.first_at is None or demand.day < MIN_SAMPLES:
        return f"{demand.day} claims+misses in the last day (needs {MIN_SAMPLES})"
    if now - demand.first_at < MIN_HISTORY:
        return f"history of {_duration((now - demand.first_at).total_seconds())} (needs 30m)"
    if demand.ready_p90_seconds is None:
        return "no time-to-ready measured yet"
    return None


SIGNIFICANCE = 2.0
"""How many Poisson standard deviations a short window must stray from the long-run rate to be believed."""


def recent_rate(demand: Demand) -> float:
    """The rate of the last two hours, unless a shorter window (10, 30, then 60 minutes, shortest first) departs
    from it by more than Poisson noise: then that window's rate. A steady pool is sized from the long window (the
    max of noisy short windows would over-provision it by a fifth, measured in bench/autoscale_sim.py), a rise or
    a fall shows within minutes."""
    long_run = demand.rate(120)
    for minutes in (10, 30, 60):
        count, expected = demand.count(minutes), long_run * minutes
        margin = SIGNIFICANCE * math.sqrt(expected) + 1
        if abs(count - expected) > margin:
            return count / minutes
    return long_run


def weekly_rate(demand: Demand, now: datetime) -> float | None:
    """The rate of the coming minutes at this time of the week, averaged over the past weeks (None: under a week
    of history). The coming 15 minutes anticipate a rise one lead time ahead; the hour smooths it."""
    weeks = demand.weeks(now)
    if weeks == 0:
        return None
    return max(demand.weekly_next_15m / (15 * weeks), demand.weekly_next_60m / (60 * weeks))


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


def estimate(
    demand: Demand, now: datetime, target_hit_rate: float, lead_time: str = "mean"
) -> Estimate | None:
    p90 = demand.ready_p90_seconds
    if insufficient(demand, now) is not None or p90 is None:
        return None
    recent = recent_rate(demand)
    weekly = weekly_rate(demand, now)
    rate = max(recent, weekly or 0.0)
    lead = p90 if lead_time == "p90" or demand.ready_mean_seconds is None else demand.ready_mean_seconds
    return Estimate(rate, recent, weekly, lead, p90, base_stock_size(rate, lead, target_hit_rate), lead_time)


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
    """For ``explain``: 'autoscale: 0.8 claims/min, ready p90 4m10s, target 95%'."""
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
    wanted = min(max(est.size, settings.min), settings.max)
    if schedule_floor is not None:
        wanted = max(wanted, schedule_floor)
    reason = est.describe(settings.target_hit_rate)
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
    return None if est is None else min(est.size, MAX_SIZE)


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s" if s else f"{m}m"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"
