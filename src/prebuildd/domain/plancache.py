"""Targets and plans of pools at rest, reused from the previous cycle while their inputs are the same (pure).

At scale most pools do not change between two cycles: same preset row, same counts, no demand, nothing due. The
reconciler still reads them every cycle (a fixed number of queries), but building their snapshot, target and plan
again would cost per-preset Python for an answer it already has. These caches key each pool by everything its
answer depends on (the preset row, the pool's counts, its demand, and the time only where it matters: the minute
for schedules, ``now`` against a backoff or a failed delete's retry) and compute it with the very functions of
the uncached path on a miss, so a hit is what the uncached path would return (a property test checks it).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from prebuildd.domain.autoscale import Demand
from prebuildd.domain.failures import FailurePolicy, failure_inputs
from prebuildd.domain.planner import Plan, PresetSnapshot, RunningCounts, needs_rows, plan_preset
from prebuildd.domain.snapshot import PresetRow, PresetRows, preset_snapshot
from prebuildd.domain.targets import PoolTarget, pool_target


def _minute(now: datetime) -> datetime:
    # Cron schedules match whole minutes of local time; every zone in use today is offset from UTC by whole
    # minutes, so the UTC minute decides the local one.
    return now.replace(second=0, microsecond=0)


def resting_key(
    row: PresetRow, running: int, ready: int, demand: Demand, now: datetime
) -> tuple[object, ...] | None:
    """What the target of a pool read as counts depends on, or None when it depends on the time in a way a key
    cannot hold (autoscaling, a target expression, demand, failures: those are computed every cycle).

    Compared with ``==`` (never hashed): the row and the demand usually are the very objects of the previous
    cycle, which makes the comparison an identity check."""
    if (
        row.consecutive_failures
        or row.autoscale is not None
        or row.target_expression is not None
        or demand.first_at is not None
    ):
        return None
    return (row, running, ready, demand, _minute(now) if row.schedules else None)


def uncached_target(
    row: PresetRow,
    running: int,
    ready: int,
    demand: Demand,
    now: datetime,
    policy: FailurePolicy,
) -> tuple[PoolTarget, bool]:
    """A pool read as counts: its target, and whether it must be read row by row after all (``needs_rows``).
    The snapshot reader's path for a pool at rest, without a cache."""
    rows = PresetRows(row, counts=RunningCounts(running, ready))
    snap = preset_snapshot(
        rows, delete_retry=policy.backoff_interval, failure_inputs=failure_inputs(policy, now)
    )
    target = pool_target(snap, row, demand, now)
    return target, needs_rows(target.snapshot, now)


@dataclass(frozen=True, slots=True)
class _Target:
    key: tuple[object, ...]
    target: PoolTarget
    needs_rows: bool


class TargetCache:
    """Targets of pools at rest by ``resting_key``, for one failure policy."""

    def __init__(self, policy: FailurePolicy) -> None:
        self.policy = policy
        self._entries: dict[UUID, _Target] = {}
        self.hits = 0
        self.misses = 0

    def target(
        self, row: PresetRow, running: int, ready: int, demand: Demand, now: datetime
    ) -> tuple[PoolTarget, bool]:
        """As ``uncached_target``; reused when the pool's key is the one of its previous lookup."""
        key = resting_key(row, running, ready, demand, now)
        if key is None:
            self.misses += 1
            return uncached_target(row, running, ready, demand, now, self.policy)
        entry = self._entries.get(row.preset_id)
        if entry is not None and entry.key == key:
            self.hits += 1
            return entry.target, entry.needs_rows
        self.misses += 1
        target, needs = uncached_target(row, running, ready, demand, now, self.policy)
        self._entries[row.preset_id] = _Target(key, target, needs)
        return target, needs

    def retain(self, presets: Collection[PresetRow]) -> None:
        """Forget the presets that are gone (cheap when none is: call it after every read)."""
        if len(self._entries) > len(presets):
            ids = {p.preset_id for p in presets}
            self._entries = {k: e for k, e in self._entries.items() if k in ids}


def plan_key(snap: PresetSnapshot, now: datetime, *, paused: bool) -> tuple[object, ...] | None:
    """What ``plan_preset(snap, now)`` depends on besides the snapshot itself, or None when the time decides
    too much of it (a running prebuild may expire by its TTL at any moment)."""
    if snap.running and snap.ttl_seconds > 0:
        return None
    return (
        paused,
        _minute(now) if snap.schedules else None,
        now < snap.backoff_until if snap.backoff_until is not None else None,
        tuple(item.retry_at <= now for item in snap.leftovers if item.retry_at is not None),
    )


class PlanCache:
    """Plans by the snapshot they were made from (the same object: ``TargetCache`` hands the previous cycle's
    back for a pool at rest) and ``plan_key``. A new snapshot object is planned again, even if equal: comparing
    whole snapshots costs about what planning does."""

    def __init__(self) -> None:
        self._plans: dict[UUID, tuple[PresetSnapshot, tuple[object, ...], Plan]] = {}
        self.hits = 0

    def plan(self, snap: PresetSnapshot, now: datetime, *, paused: bool = False) -> Plan:
        key = plan_key(snap, now, paused=paused)
        if key is None:
            return plan_preset(snap, now, paused=paused)
        entry = self._plans.get(snap.preset_id)
        if entry is not None and entry[0] is snap and entry[1] == key:
            self.hits += 1
            return entry[2]
        plan = plan_preset(snap, now, paused=paused)
        self._plans[snap.preset_id] = (snap, key, plan)
        return plan

    def retain(self, preset_ids: Collection[UUID]) -> None:
        """Forget the presets not in ``preset_ids`` (cheap when none is gone: call it after every cycle)."""
        if len(self._plans) > len(preset_ids):
            self._plans = {k: v for k, v in self._plans.items() if k in preset_ids}
