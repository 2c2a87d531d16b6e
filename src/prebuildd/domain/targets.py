"""Where a pool's target comes from (SPEC §5.2), pure: the schedule (instances or the matching cron hours), the
base-stock autoscaler, or a target expression. The planner takes the result as ``target_override``; everything
else it decides (deletes, creates, gates) is the same whatever the source.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from prebuildd.domain.autoscale import (
    AutoscaleSettings,
    AutoscaleState,
    Decision,
    Demand,
    decide,
    recommended,
)
from prebuildd.domain.planner import PresetSnapshot
from prebuildd.domain.schedules import desired_at
from prebuildd.domain.snapshot import PresetRow


@dataclass(frozen=True)
class PoolTarget:
    snapshot: PresetSnapshot
    """The snapshot with its target set."""
    decision: Decision | None = None
    """The autoscaler's decision (None: the pool does not autoscale)."""
    recommended: int | None = None
    """The formula's size at 95% hits (or the pool's target hit rate), even when autoscale is off."""


def stored_state(row: PresetRow) -> AutoscaleState | None:
    if row.autoscale_target is None or row.autoscale_raised_at is None or row.autoscale_changed_at is None:
        return None
    return AutoscaleState(row.autoscale_target, row.autoscale_raised_at, row.autoscale_changed_at)


def pool_target(snap: PresetSnapshot, row: PresetRow, demand: Demand | None, now: datetime) -> PoolTarget:
    demand = demand or Demand()
    desired = desired_at(now, snap.timezone, snap.schedules, snap.desired_instances)
    settings = AutoscaleSettings.from_dict(row.autoscale) if row.autoscale is not None else None
    rec = recommended(demand, now, settings.target_hit_rate if settings else 0.95)
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
