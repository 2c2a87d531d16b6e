"""Trace-driven evaluation of pool sizing: static pools, the reference-style expression and the base-stock
autoscaler, on synthetic claim traces, with the real planner and policy on a simulated clock.

What is real: ``domain.targets.pool_target`` (the target source: schedule, autoscaler with its stabilization
state, expression) and ``domain.planner.plan_preset`` (creates and extraneous deletes) run unchanged on
``PresetSnapshot``s built each cycle; the demand they read is computed from the simulated claim and miss records
exactly as the snapshot's SQL aggregates them (same windows, same 20-newest p90 with linear interpolation, same
four past weeks and seven past days). What is modelled: the database, the queue and the daemons. A create's prebuild is ready after a
lognormal build time (median 4 min, p90 8 min) with no queueing (unlimited daemons); a delete is instant; a claim
takes the oldest ready prebuild and kicks a cycle at once (as the server's claim kick does), and cycles also run
every 30 s. A miss waits for a cold build, the same lognormal. Not modelled: build failures and backoff, TTLs, the
in-flight cap, reconcile latency beyond the cycle period.

    python bench/autoscale_sim.py [--traces workday,steady,bursty,seasonal] [--static 1-30] [--seed 1] [--jobs 2]
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import math
import platform
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from prebuildd.domain import autoscale
from prebuildd.domain.autoscale import (
    BURST_LOOKBACK,
    BURST_MAX_MINUTES,
    BURST_MINUTE,
    WINDOWS,
    AutoscaleSettings,
    Demand,
)
from prebuildd.domain.planner import PresetSnapshot, RunningPrebuild, plan_preset
from prebuildd.domain.snapshot import PresetRow
from prebuildd.domain.targets import pool_target

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
CYCLE = 0.5  # minutes between periodic cycles
MEDIAN_BUILD, P90_BUILD = 4.0, 8.0
SIGMA = math.log(P90_BUILD / MEDIAN_BUILD) / 1.2815515655446004
MU = math.log(MEDIAN_BUILD)

# -- traces ----------------------------------------------------------------------------------------------------


def workday_rate(minute_of_day: float) -> float:
    h = minute_of_day / 60
    if 9 <= h < 9.5:
        return 2.0
    if 9.5 <= h < 17:
        return 0.5
    if 17 <= h < 18:  # the trace leaves 17:00-18:00 open: winding down, halfway
        return 0.25
    return 0.05


def arrivals(days: int, rate: Callable[[float], float], rng: random.Random) -> list[float]:
    """Poisson arrivals (minutes from START) of a rate constant within each minute (exact for such a rate)."""
    out: list[float] = []
    for m in range(days * 1440):
        r = rate(m)
        t = m + rng.expovariate(r)
        while t < m + 1:
            out.append(t)
            t += rng.expovariate(r)
    return out


def trace(name: str, seed: int) -> tuple[list[float], float]:
    rng = random.Random(f"{name}-{seed}")
    if name == "workday":
        return arrivals(5, lambda m: workday_rate(m % 1440), rng), 5 * 1440
    if name == "steady":
        return arrivals(3, lambda m: 0.5, rng), 3 * 1440
    if name == "bursty":
        base = arrivals(3, lambda m: 0.1, rng)
        bursts = []
        t = 180 + rng.uniform(-30, 30)
        while t < 3 * 1440 - 2:
            bursts += [t + rng.uniform(0, 2) for _ in range(30)]
            t += 180 + rng.uniform(-30, 30)
        return sorted(base + bursts), 3 * 1440
    if name == "seasonal":

        def rate(m: float) -> float:
            weekday = int(m // 1440) % 7  # START is a Monday
            return workday_rate(m % 1440) if weekday < 5 else 0.05

        return arrivals(14, rate, rng), 14 * 1440
    raise SystemExit(f"unknown trace {name!r}")


# -- policies --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    name: str
    instances: int
    autoscale: AutoscaleSettings | None = None
    expression: str | None = None


# -- the simulated pool ----------------------------------------------------------------------------------------


@dataclass
class Prebuild:
    id: UUID
    created: float
    ready: float


@dataclass
class Records:
    """The demand table, as sorted lists of minutes."""

    claims: list[float] = field(default_factory=list)
    misses: list[float] = field(default_factory=list)
    both: list[float] = field(default_factory=list)
    ready: list[tuple[float, float]] = field(default_factory=list)  # (ready, created), by ready time
    per_minute: dict[int, int] = field(default_factory=dict)
    busy: list[int] = field(default_factory=list)
    """The minutes with ``BURST_MINUTE`` or more claims plus misses, in order (the snapshot's busy minutes)."""

    def record(self, at: float, hit: bool) -> None:
        bisect.insort(self.claims if hit else self.misses, at)
        bisect.insort(self.both, at)
        minute = math.floor(at)
        n = self.per_minute[minute] = self.per_minute.get(minute, 0) + 1
        if n == BURST_MINUTE:
            bisect.insort(self.busy, minute)

    def demand(self, now: float) -> Demand:
        def count(xs: list[float], since: float, until: float = now) -> int:
            return bisect.bisect_right(xs, until) - bisect.bisect_right(xs, since)

        claims = tuple(count(self.claims, now - w) for w in WINDOWS)
        misses = tuple(count(self.misses, now - w) for w in WINDOWS)
        week = 7 * 1440
        next15 = sum(
            bisect.bisect_left(self.both, now - k * week + 15) - bisect.bisect_left(self.both, now - k * week)
            for k in range(1, 5)
        )
        next60 = sum(
            bisect.bisect_left(self.both, now - k * week + 60) - bisect.bisect_left(self.both, now - k * week)
            for k in range(1, 5)
        )
        day = 1440
        daily15 = sum(
            bisect.bisect_left(self.both, now - k * day + 15) - bisect.bisect_left(self.both, now - k * day)
            for k in range(1, 8)
        )
        daily60 = sum(
            bisect.bisect_left(self.both, now - k * day + 60) - bisect.bisect_left(self.both, now - k * day)
            for k in range(1, 8)
        )
        recent = [r for r in self.ready[-20:] if r[0] > now - week]
        p90 = _percentile_cont([r - c for r, c in recent], 0.9) if recent else None
        lookback = BURST_LOOKBACK.total_seconds() / 60
        first = bisect.bisect_left(self.busy, math.floor(now - lookback))
        busy = self.busy[first:][-BURST_MAX_MINUTES:]
        return Demand(
            busy_minutes=tuple((START + timedelta(minutes=m), self.per_minute[m]) for m in busy),
            claims=claims,
            misses=misses,
            day=count(self.both, now - 1440),
            claims_hour=claims[3],
            first_at=START + timedelta(minutes=self.both[0]) if self.both else None,
            weekly_next_15m=next15,
            weekly_next_60m=next60,
            daily_next_15m=daily15,
            daily_next_60m=daily60,
            ready_p90_seconds=None if p90 is None else p90 * 60,
            ready_mean_seconds=60 * sum(r - c for r, c in recent) / len(recent) if recent else None,
            ready_samples=len(recent),
        )


def _percentile_cont(values: list[float], q: float) -> float:
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class Result:
    claims: int = 0
    hits: int = 0
    idle_minutes: float = 0.0
    waits: list[float] = field(default_factory=list)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.claims if self.claims else 1.0

    @property
    def idle_hours(self) -> float:
        return self.idle_minutes / 60

    @property
    def p95_wait(self) -> float:
        xs = sorted(self.waits)
        return xs[min(len(xs) - 1, math.ceil(0.95 * len(xs)) - 1)] if xs else 0.0


def build_time(rng: random.Random) -> float:
    return rng.lognormvariate(MU, SIGMA)


def simulate(policy: Policy, claims: list[float], end: float, seed: int) -> Result:
    rng = random.Random(f"builds-{seed}")
    cold = random.Random(f"cold-{seed}")
    cold_times = [
        build_time(cold) for _ in claims
    ]  # the same cold build for the same claim, whatever the policy
    preset_id, template_id = uuid4(), uuid4()
    row = PresetRow(
        preset_id=preset_id,
        preset_name="p",
        template_id=template_id,
        template_name="t",
        organization_id=uuid4(),
        version_id=uuid4(),
        version_name="v1",
        active=True,
        desired_instances=policy.instances,
        autoscale=policy.autoscale.as_dict() if policy.autoscale else None,
        target_expression=policy.expression,
    )
    pool: dict[UUID, Prebuild] = {}
    records = Records()
    result = Result()
    becoming_ready: list[tuple[float, UUID]] = []
    last_t = 0.0

    def advance(t: float) -> None:
        nonlocal last_t
        while becoming_ready and becoming_ready[0][0] <= t:
            _, pid = heapq.heappop(becoming_ready)
            p = pool.get(pid)
            if p is not None:
                records.ready.append((p.ready, p.created))
        ready_now = sum(1 for p in pool.values() if p.ready <= last_t)
        # idle: ready prebuilds between last_t and t (those turning ready inside the interval, from their time)
        idle = ready_now * (t - last_t)
        for p in pool.values():
            if last_t < p.ready <= t:
                idle += t - p.ready
        result.idle_minutes += idle
        last_t = t

    def cycle(t: float) -> None:
        nonlocal row
        now = START + timedelta(minutes=t)
        running = tuple(
            RunningPrebuild(p.id, START + timedelta(minutes=p.created))
            for p in sorted(pool.values(), key=lambda p: p.created)
            if p.ready <= t
        )
        starting = sum(1 for p in pool.values() if p.ready > t)
        snap = PresetSnapshot(
            preset_id=preset_id,
            template_name="t",
            preset_name="p",
            version_name="v1",
            active=True,
            desired_instances=policy.instances,
            running=running,
            starting=starting,
        )
        target = pool_target(snap, row, records.demand(t), now)
        decision = target.decision
        if decision is not None and decision.state is not None:
            s = decision.state
            row = replace(
                row,
                autoscale_target=s.target,
                autoscale_raised_at=s.raised_at,
                autoscale_changed_at=s.changed_at,
            )
        plan = plan_preset(target.snapshot, now)
        for d in plan.deletes:
            pool.pop(d.workspace_id, None)
        for _ in range(plan.create):
            p = Prebuild(uuid4(), t, t + build_time(rng))
            pool[p.id] = p
            heapq.heappush(becoming_ready, (p.ready, p.id))

    next_cycle = 0.0
    for i, at in enumerate([*claims, end]):
        while next_cycle <= at:
            advance(next_cycle)
            cycle(next_cycle)
            next_cycle += CYCLE
        if at >= end:
            break
        advance(at)
        ready = [p for p in pool.values() if p.ready <= at]
        result.claims += 1
        if ready:
            oldest = min(ready, key=lambda p: p.created)
            del pool[oldest.id]
            result.hits += 1
            result.waits.append(0.0)
        else:
            result.waits.append(cold_times[i])
        records.record(at, bool(ready))
        cycle(at)  # the claim kicks the reconciler
    advance(end)
    return result


# -- report ----------------------------------------------------------------------------------------------------

SWEEP = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
"""The target hit rates swept (L = mean): the autoscaler's operating curve, read at the expression's idle hours."""
IDLE_GOAL = {"steady": 1.05}
"""The idle budget against the smallest static pool reaching the hit-rate goal: 70%, 105% on the steady trace."""


@dataclass
class Outcome:
    """One trace's figures and its goals."""

    name: str
    text: str
    goal_rows: list[str]
    beats_expression: bool


def smallest_static(
    claims: list[float], end: float, seed: int, lo: int, hi: int, goal: float
) -> tuple[dict[int, Result], int | None]:
    """Static pools by bisection (the hit rate grows with the size): the smallest reaching ``goal``, with its
    neighbours simulated for the table."""
    runs: dict[int, Result] = {}

    def run(size: int) -> Result:
        if size not in runs:
            runs[size] = simulate(Policy(f"static {size}", size), claims, end, seed)
        return runs[size]

    a, b = lo, hi
    if run(hi).hit_rate < goal:
        return runs, None
    while a < b:
        mid = (a + b) // 2
        if run(mid).hit_rate >= goal:
            b = mid
        else:
            a = mid + 1
    for size in (a - 1, a + 1):
        if lo <= size <= hi:
            run(size)
    return runs, a


def run_trace(name: str, seed: int, lo: int, hi: int, goal: float, intervals: int | None = None) -> Outcome:
    if intervals is not None:  # a variant of the policy's constant, for this process only
        autoscale.BURST_MIN_INTERVALS = intervals
    claims, end = trace(name, seed)
    started = time.perf_counter()
    statics, best = smallest_static(claims, end, seed, lo, hi, goal)
    expr = simulate(Policy("expression", 1, expression=EXPRESSION), claims, end, seed)

    def auto(rate: float, lead: str = "mean") -> Result:
        settings = AutoscaleSettings(min=1, max=30, target_hit_rate=rate, lead_time=lead)
        return simulate(Policy("autoscale", 1, autoscale=settings), claims, end, seed)

    a_p90 = auto(goal, "p90")
    sweep = {rate: auto(rate) for rate in SWEEP}
    a_mean = sweep[goal] if goal in sweep else auto(goal)
    took = time.perf_counter() - started
    out: list[str] = []
    out.append(f"### {name}: {len(claims)} claims over {end / 1440:.0f} days (simulated in {took:.0f}s)\n")
    out.append("| policy | hit rate | idle prebuild-hours | p95 wait (min) |\n|---|---|---|---|")
    for size, r in sorted(statics.items()):
        mark = f" (smallest reaching {goal:.0%})" if size == best else ""
        out.append(f"| static {size}{mark} | {r.hit_rate:.1%} | {r.idle_hours:.1f} | {r.p95_wait:.1f} |")
    rows = [
        (f"expression `{EXPRESSION}`", expr),
        (f"autoscale {goal:.0%}, L = mean (the default)", a_mean),
        (f"autoscale {goal:.0%}, L = p90", a_p90),
    ]
    for label, r in rows:
        out.append(f"| {label} | {r.hit_rate:.1%} | {r.idle_hours:.1f} | {r.p95_wait:.1f} |")
    out.append("\nSweep of `target_hit_rate` (L = mean):\n")
    out.append("| target | hit rate | idle prebuild-hours | p95 wait (min) |\n|---|---|---|---|")
    for rate, r in sweep.items():
        out.append(f"| {rate:.0%} | {r.hit_rate:.1%} | {r.idle_hours:.1f} | {r.p95_wait:.1f} |")
    goals: list[str] = []
    budget = IDLE_GOAL.get(name, 0.70)
    for lead, a in (("mean", a_mean), ("p90", a_p90)):
        if best is None:
            goals.append(f"| {name} | L = {lead} | no static pool up to {hi} reaches {goal:.0%} | - |")
            continue
        ratio = a.idle_hours / statics[best].idle_hours
        hits_ok, idle_ok = a.hit_rate >= goal, ratio <= budget
        if hits_ok and idle_ok:
            verdict = "**met**"
        else:
            short = [] if hits_ok else [f"hits {100 * (goal - a.hit_rate):.1f} points short"]
            short += [] if idle_ok else [f"idle {100 * (ratio - budget):.0f} points over"]
            verdict = "**missed**: " + ", ".join(short)
        goals.append(
            f"| {name} | ≥ {goal:.0%} hits at ≤ {budget:.0%} of static {best}'s idle hours, L = {lead} | "
            f"{a.hit_rate:.1%} at {ratio:.0%} | {verdict} |"
        )
    # The like-for-like reading of "at equal or fewer idle hours": the best hit rate on the autoscaler's operating
    # curve among the points that idle no more than the expression.
    within = [(rate, r) for rate, r in sweep.items() if r.idle_hours <= expr.idle_hours]
    at_goal = (
        f"at {goal:.0%}: {a_mean.hit_rate:.1%} vs {expr.hit_rate:.1%} hits at "
        f"{a_mean.idle_hours / max(expr.idle_hours, 1e-9):.1f}x its idle hours"
    )
    if within:
        rate, r = max(within, key=lambda x: x[1].hit_rate)
        beats = r.hit_rate > expr.hit_rate
        cell = (
            f"{r.hit_rate:.1%} at target {rate:.0%} ({r.idle_hours:.0f} h) vs {expr.hit_rate:.1%} "
            f"({expr.idle_hours:.0f} h); {at_goal}"
        )
        verdict = (
            "**better**" if beats else f"**not better**: {100 * (expr.hit_rate - r.hit_rate):.1f} points"
        )
    else:
        lowest = min(sweep.items(), key=lambda x: x[1].idle_hours)
        beats = False
        cell = (
            f"no swept target idles ≤ {expr.idle_hours:.0f} h (the lowest: {lowest[0]:.0%} at "
            f"{lowest[1].idle_hours:.0f} h, {lowest[1].hit_rate:.1%} hits); {at_goal}"
        )
        verdict = "**not comparable**"
    goals.append(f"| {name} | beats the expression at ≤ its idle hours | {cell} | {verdict} |")
    return Outcome(name, "\n".join(out), goals, beats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default="workday,steady,bursty,seasonal")
    ap.add_argument(
        "--static", default="1-30", help="static pool sizes, a range lo-hi (searched by bisection)"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hit-rate", type=float, default=0.95)
    ap.add_argument("--jobs", type=int, default=1, help="traces simulated in parallel processes")
    ap.add_argument(
        "--burst-min-intervals",
        type=int,
        default=None,
        help=f"a variant: intervals seen before pre-warming for a burst (the policy's: {autoscale.BURST_MIN_INTERVALS})",
    )
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.static.split("-"))
    names = args.traces.split(",")
    intervals = args.burst_min_intervals
    print(
        f"python {platform.python_version()} on {platform.machine()} {platform.system()}; seed {args.seed}; "
        f"bursts learnt after {intervals or autoscale.BURST_MIN_INTERVALS} intervals"
    )
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_trace, n, args.seed, lo, hi, args.hit_rate, intervals) for n in names]
        outcomes = [f.result() for f in futures]
    for o in outcomes:
        print(f"\n{o.text}")
    print("\n### Goals\n\n| trace | goal | figure | verdict |\n|---|---|---|---|")
    for o in outcomes:
        print("\n".join(o.goal_rows))
    won = sum(o.beats_expression for o in outcomes)
    print(
        f"\nbeats the expression at equal or fewer idle hours on {won} of {len(outcomes)} traces "
        f"(goal: at least 3 of 4): {'met' if won >= 3 else 'missed'}"
    )
    sys.stdout.flush()


EXPRESSION = "max(scheduled_target, ceil(claim_rate_10m * 5))"


if __name__ == "__main__":
    main()
