"""Where a pool's target comes from (SPEC §5.2), pure: the schedule (instances or the matching cron hours), the
base-stock autoscaler, or a target expression. The planner takes the result as ``target_override``; everything
else it decides (deletes, creates, gates) is the same whatever the source.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from prebuildd.domain import expression, pools
from prebuildd.domain.autoscale import (
    WINDOWS,
    AutoscaleSettings,
    AutoscaleState,
    Decision,
    Demand,
    decide,
    recommended,
)
from prebuildd.domain.planner import PresetSnapshot, preset_state
from prebuildd.domain.schedules import desired_at
from prebuildd.domain.snapshot import PresetRow

NO_DEMAND = Demand()


@dataclass(frozen=True, slots=True)
class PoolTarget:
    snapshot: PresetSnapshot
    """The snapshot with its target set."""
    decision: Decision | None = None
    """The autoscaler's decision (None: the pool does not autoscale)."""
    recommended: int | None = None
    """The formula's size at 95% hits (or the pool's target hit rate), even when autoscale is off."""


def expression_variables(
    snap: PresetSnapshot, demand: Demand, now: datetime, scheduled: int
) -> dict[str, float]:
    """The reference's variables: the pool's counts (before this target), demand per window, and the local
    ``hour`` and ``weekday`` (0 = Sunday, as in cron) in the preset's timezone."""
    state, _ = preset_state(snap, now)
    zone = pools.zone(snap.timezone)
    local = now.astimezone(zone) if zone is not None else now
    out: dict[str, float] = {
        "scheduled_target": scheduled,
        "running": state.running,
        "eligible": state.eligible,
        "starting": state.starting,
        "stopping": state.stopping,
        "deleting": state.deleting,
        "expired": state.expired,
        "hour": local.hour,
        "weekday": local.isoweekday() % 7,
    }
    for i, n in enumerate(WINDOWS):
        out[f"claims_{n}m"] = demand.claims[i]
        out[f"misses_{n}m"] = demand.misses[i]
        out[f"claim_rate_{n}m"] = demand.claims[i] / n
    return out


def stored_state(row: PresetRow) -> AutoscaleState | None:
    if row.autoscale_target is None or row.autoscale_raised_at is None or row.autoscale_changed_at is None:
        return None
    return AutoscaleState(row.autoscale_target, row.autoscale_raised_at, row.autoscale_changed_at)


def pool_target(snap: PresetSnapshot, row: PresetRow, demand: Demand | None, now: datetime) -> PoolTarget:
    demand = demand or NO_DEMAND
    if row.autoscale is None and row.target_expression is None and demand.first_at is None:
        return PoolTarget(snap)  # the common static pool with no demand yet: nothing to compute
    desired = desired_at(now, snap.timezone, snap.schedules, snap.desired_instances)
    settings = AutoscaleSettings.from_dict(row.autoscale) if row.autoscale is not None else None
    rec = recommended(demand, now, settings) if settings else recommended(demand, now)
    if row.target_expression is not None and snap.active:
        result = expression.evaluate(
            row.target_expression,
            expression_variables(snap, demand, now, desired.instances),
            desired.instances,
        )
        why = f"expression {row.target_expression!r}"
        if result.error:
            why += f" failed ({result.error}): using the scheduled {desired.instances}"
        out = replace(snap, target_override=result.target, target_source=result.source, target_reason=why)
        return PoolTarget(out, None, rec)
    if settings is None or not snap.active:
        return PoolTarget(snap, None, rec)
    backing_off = snap.backoff_until is not None and now < snap.backoff_until
    decision = decide(
        settings,
        demand,
        stored_state(row),
        now=now,
        scheduled=desired.instances,
        schedule_floor=desired.schedule.instances if desired.schedule is not None else None,
        may_scale_up=not (backing_off or snap.hard_limited),
    )
    source = "autoscale_fallback" if decision.fallback else "autoscale"
    out = replace(snap, target_override=decision.target, target_source=source, target_reason=decision.reason)
    return PoolTarget(out, decision, rec)
