"""Repository of prebuild pools: the reconciler's snapshot, cycle lease, per-preset create lock, failure records
and events, and the operator actions on pools (pause, invalidate, pool settings, retry, cleanup, explain).

The snapshot reads are the reconcile cycle's hot path: each function here is exactly one statement, so the
number of queries per cycle is the number of calls (bench/reconcile_scale.py counts them by wrapping this
module's row helpers).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any
from uuid import UUID

from prebuildd.domain.autoscale import (
    BURST_LOOKBACK,
    BURST_MAX_MINUTES,
    BURST_MINUTE,
    WINDOWS,
    AutoscaleState,
    Demand,
)
from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.domain.schedules import Schedule
from prebuildd.domain.snapshot import PrebuildRow, PresetRow
from prebuildd.store.db import Conn
from prebuildd.store.rows import execute, fetch_all, fetch_all_as, fetch_one, fetch_tuples, jsonb

# -- the cycle lease --------------------------------------------------------------------------------------

CYCLE_LEASE = "reconcile_cycle"


@dataclass(frozen=True)
class Lease:
    """The cycle lease as one attempt to take it left it: ``held`` by the caller, or by ``holder`` until
    ``expires_at`` (None: by nobody, or by a replica whose take committed while this statement ran)."""

    held: bool
    holder: str | None = None
    acquired_at: datetime | None = None
    expires_at: datetime | None = None


async def take_lease(conn: Conn, holder: str, now: datetime, expires_at: datetime) -> Lease:
    """Take or renew the cycle lease (one statement): free, already ours, expired at ``now``, or held by a
    backend that is gone. The lease records ``conn``'s backend, so ``conn`` should live as long as the holder."""
    row = await fetch_one(
        conn,
        "reconcile.take_lease",
        {"name": CYCLE_LEASE, "holder": holder, "now": now, "expires_at": expires_at},
    )
    if row is None:
        return Lease(held=False)
    return Lease(bool(row["held"]), row["holder"], row["acquired_at"], row["expires_at"])


async def release_lease(conn: Conn, holder: str) -> bool:
    """Give the lease back; False when it was no longer ours (another replica had taken it over)."""
    return await execute(conn, "reconcile.release_lease", {"name": CYCLE_LEASE, "holder": holder}) > 0


def _pg_interval(seconds: float) -> str:
    return f"{max(int(seconds * 1000), 1)}ms"


async def bound_waits(conn: Conn, *, lock_wait: float, idle_timeout: float) -> None:
    """Bound the current transaction's lock waits, and how long it may sit idle holding its locks: a replica
    frozen inside it has its session ended by the server instead of blocking every other replica."""
    await fetch_one(
        conn,
        "reconcile.bound_waits",
        {"lock_timeout": _pg_interval(lock_wait), "idle_timeout": _pg_interval(idle_timeout)},
    )


# -- the snapshot -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueDepth:
    pending: int = 0
    oldest: datetime | None = None


async def reconciliation_paused(conn: Conn) -> bool:
    row = await fetch_one(conn, "reconcile.settings")
    return bool(row and row["reconciliation_paused"])


@dataclass(frozen=True)
class SnapshotSettings:
    paused: bool
    queue: QueueDepth


async def snapshot_settings(conn: Conn, *, idle_timeout: float) -> SnapshotSettings:
    """``reconciliation_paused`` and the queue depth as the snapshot's first statement, bounding how long its
    transaction may sit idle."""
    row = await fetch_one(conn, "reconcile.snapshot_settings", {"idle_timeout": _pg_interval(idle_timeout)})
    if row is None:
        return SnapshotSettings(False, QueueDepth())
    return SnapshotSettings(
        bool(row["reconciliation_paused"]), QueueDepth(int(row["pending"]), row["oldest"])
    )


@dataclass(frozen=True, slots=True)
class PoolSummary:
    """A pool as ``snapshot_presets`` aggregates it: its running prebuilds (ready ones among them), whether some
    prebuild of it needs its row read (anything but a valid running prebuild whose time to ready is recorded),
    its jobs in flight, and a fingerprint of its rows (None without prebuilds): while that is unchanged and nothing
    is in flight, the rows read last are the rows (``SnapshotReader``)."""

    running: int = 0
    ready: int = 0
    needs_rows: bool = False
    inflight: int = 0
    fingerprint: int | None = None


@dataclass(frozen=True)
class SnapshotPresets:
    presets: list[PresetRow]
    pools: list[PoolSummary]
    """Each preset's pool, in the order of ``presets``."""
    inflight: int
    """Prebuild jobs in flight, all pools together."""


_PRESET_FIELDS = len(fields(PresetRow))
_SCHEDULES = [f.name for f in fields(PresetRow)].index("schedules")


class PresetRowCache:
    """The previous snapshot's ``PresetRow`` of each preset with the columns it was built from: an unchanged row
    gives back the very same object, which is cheaper than building it again and lets the reconciler's caches of
    pools at rest (``domain.plancache``) compare rows by identity."""

    def __init__(self) -> None:
        self._rows: dict[UUID, tuple[tuple[Any, ...], PresetRow]] = {}


async def snapshot_presets(conn: Conn, now: datetime, cache: PresetRowCache | None = None) -> SnapshotPresets:
    rows = await fetch_tuples(
        conn, "reconcile.snapshot_presets", {"prebuilds_user_id": PREBUILDS_USER_ID, "now": now}
    )
    presets: list[PresetRow] = []
    pools: list[PoolSummary] = []
    n, at = _PRESET_FIELDS, _SCHEDULES
    previous = cache._rows if cache is not None else {}
    kept: dict[UUID, tuple[tuple[Any, ...], PresetRow]] = {}
    at_rest = PoolSummary()
    for r in rows:
        columns = r[:n]
        seen = previous.get(r[0])
        if seen is not None and seen[0] == columns:
            preset = seen[1]  # the old columns are kept too: this cycle's objects die young (less for the GC)
        else:
            schedules = tuple(Schedule(s["cron"], s["instances"]) for s in r[at] or ())
            values: list[Any] = [*r[:at], schedules, *r[at + 1 : n]]
            preset = PresetRow(*values)
            seen = (columns, preset)
        kept[preset.preset_id] = seen
        presets.append(preset)
        running, ready, needs, inflight, fingerprint, _ = r[n:]
        pools.append(
            PoolSummary(running, ready, needs, inflight, fingerprint) if running or needs else at_rest
        )
    if cache is not None:
        cache._rows = kept
    inflight = int(rows[0][-1]) if rows else 0  # the same on every row (a window over all pools)
    return SnapshotPresets(presets, pools, inflight)


async def snapshot_prebuilds(conn: Conn, preset_ids: Sequence[UUID]) -> list[PrebuildRow]:
    """The latest build of every prebuild of the given presets (one statement whatever their number)."""
    return await fetch_all_as(
        conn,
        "reconcile.snapshot_prebuilds",
        {"prebuilds_user_id": PREBUILDS_USER_ID, "preset_ids": list(preset_ids)},
        PrebuildRow,
    )


async def creation_history(conn: Conn, preset_ids: Sequence[UUID], keep: Sequence[int]) -> list[PrebuildRow]:
    """The newest ``keep[i]`` creations of ``preset_ids[i]``, claimed and deleted prebuilds included."""
    return await fetch_all_as(
        conn,
        "reconcile.snapshot_creations",
        {"preset_ids": list(preset_ids), "keep": list(keep)},
        PrebuildRow,
    )


# -- creating under the preset lock -----------------------------------------------------------------------


@dataclass(frozen=True)
class PoolCount:
    running_valid: int
    starting: int


async def lock_preset(conn: Conn, preset_id: UUID, *, lock_wait: float, idle_timeout: float) -> None:
    """Serialise creates of the preset across replicas until the transaction ends, waiting at most
    ``lock_wait`` for it (``StoreTimeout`` then); the server ends the session if the transaction then sits idle for
    ``idle_timeout`` (a frozen replica), which frees the lock. One statement."""
    await fetch_one(
        conn,
        "reconcile.lock_preset",
        {
            "preset_id": preset_id,
            "lock_timeout": _pg_interval(lock_wait),
            "idle_timeout": _pg_interval(idle_timeout),
        },
    )


async def count_pool(conn: Conn, preset: PresetRow, now: datetime) -> PoolCount:
    row = await fetch_one(
        conn,
        "reconcile.count_pool",
        {
            "preset_id": preset.preset_id,
            "prebuilds_user_id": PREBUILDS_USER_ID,
            "now": now,
            "invalidated_at": preset.last_invalidated_at,
            "ttl_seconds": preset.ttl_seconds,
        },
    )
    # An aggregate without GROUP BY always returns one row.
    return PoolCount(int(row["running_valid"]), int(row["starting"])) if row else PoolCount(0, 0)


# -- failure records --------------------------------------------------------------------------------------


async def record_transient_failure(conn: Conn, preset_id: UUID, now: datetime, error: str) -> None:
    await execute(conn, "failures.record_transient", {"preset_id": preset_id, "now": now, "error": error})


async def clear_transient_failures(conn: Conn, preset_id: UUID) -> None:
    await execute(conn, "failures.clear_transient", {"preset_id": preset_id})


async def set_prebuild_status(
    conn: Conn, preset_id: UUID, status: str, reason: str | None, error: str | None, now: datetime
) -> None:
    await execute(
        conn,
        "failures.set_status",
        {"preset_id": preset_id, "status": status, "reason": reason, "error": error, "now": now},
    )


# -- events -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewEvent:
    kind: str
    organization_id: UUID
    template_id: UUID
    preset_id: UUID
    message: str
    workspace_id: UUID | None = None
    data: dict[str, Any] = field(default_factory=dict)


async def insert_events(conn: Conn, now: datetime, events: Sequence[NewEvent]) -> None:
    """All the events in one statement, whatever their number."""
    await execute(
        conn,
        "reconcile.insert_events",
        {
            "now": now,
            "kinds": [e.kind for e in events],
            "organization_ids": [e.organization_id for e in events],
            "template_ids": [e.template_id for e in events],
            "preset_ids": [e.preset_id for e in events],
            "workspace_ids": [e.workspace_id for e in events],
            "messages": [e.message for e in events],
            "datas": [json.dumps(e.data) for e in events],
        },
    )


async def prune_events(conn: Conn, before: datetime) -> None:
    await execute(conn, "reconcile.prune_events", {"before": before})


@dataclass(frozen=True)
class Decision:
    preset_id: UUID
    created_at: datetime
    message: str


async def last_decisions(conn: Conn, preset_ids: Sequence[UUID]) -> dict[UUID, Decision]:
    rows = await fetch_all_as(conn, "prebuilds.last_decisions", {"preset_ids": list(preset_ids)}, Decision)
    return {d.preset_id: d for d in rows}


@dataclass(frozen=True)
class PresetEvent:
    created_at: datetime
    kind: str
    message: str
    data: dict[str, Any] | None


async def preset_events(conn: Conn, preset_ids: Sequence[UUID], limit: int) -> list[PresetEvent]:
    """The presets' events, newest first."""
    rows = await fetch_all(conn, "prebuilds.preset_events", {"preset_ids": list(preset_ids), "limit": limit})
    return [PresetEvent(r["created_at"], r["kind"], r["message"], r["data"]) for r in rows]


# -- claims seen by the pool status -----------------------------------------------------------------------


@dataclass(frozen=True)
class HitCounts:
    claims_hour: int = 0
    misses_hour: int = 0
    claims_day: int = 0
    misses_day: int = 0


async def hit_counts(
    conn: Conn, preset_ids: Sequence[UUID], hour_ago: datetime, day_ago: datetime
) -> dict[UUID, HitCounts]:
    """Claims and misses of each preset in the last hour and day (presets without any are left out)."""
    rows = await fetch_all(
        conn, "claims.hit_rates", {"preset_ids": list(preset_ids), "hour_ago": hour_ago, "day_ago": day_ago}
    )
    return {
        r["preset_id"]: HitCounts(
            int(r["claims_hour"]), int(r["misses_hour"]), int(r["claims_day"]), int(r["misses_day"])
        )
        for r in rows
    }


@dataclass(frozen=True)
class ClaimBuildCounts:
    """Claim builds of a preset's claimed prebuilds since a time: how many, how they ended, how long they took."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    in_progress: int = 0
    avg_seconds: float | None = None
    """Mean time from the claim to the end of its build, over the ended ones."""
    max_seconds: float | None = None
    last_error: str | None = None


async def claim_build_counts(conn: Conn, preset_id: UUID, since: datetime) -> ClaimBuildCounts:
    row = await fetch_one(conn, "prebuilds.claim_build_counts", {"preset_id": preset_id, "since": since})
    if row is None:
        return ClaimBuildCounts()
    avg, longest = row["avg_seconds"], row["max_seconds"]
    return ClaimBuildCounts(
        total=int(row["total"]),
        succeeded=int(row["succeeded"]),
        failed=int(row["failed"]),
        in_progress=int(row["in_progress"]),
        avg_seconds=None if avg is None else round(float(avg), 3),
        max_seconds=None if longest is None else round(float(longest), 3),
        last_error=row["last_error"],
    )


# -- operator actions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PauseSetting:
    reconciliation_paused: bool
    updated_at: datetime


async def set_paused(conn: Conn, paused: bool, now: datetime, user_id: UUID) -> PauseSetting:
    row = await fetch_one(conn, "prebuilds.set_paused", {"paused": paused, "now": now, "user_id": user_id})
    if row is None:  # the settings row is created by the first migration and never deleted
        raise RuntimeError("the settings row is missing")
    return PauseSetting(row["reconciliation_paused"], row["updated_at"])


@dataclass(frozen=True)
class ActivePreset:
    """A preset of a template's active version."""

    id: UUID
    name: str
    template_version_id: UUID
    template_id: UUID
    template_name: str


async def presets_of_active_version(
    conn: Conn, organization_id: UUID, template: str, preset: str | None
) -> list[ActivePreset]:
    return await fetch_all_as(
        conn,
        "prebuilds.presets_of_active_version",
        {"organization_id": organization_id, "template": template, "preset": preset},
        ActivePreset,
    )


async def invalidate(conn: Conn, preset_ids: Sequence[UUID], now: datetime) -> None:
    await execute(conn, "prebuilds.invalidate", {"preset_ids": list(preset_ids), "now": now})


@dataclass(frozen=True)
class PresetPool:
    """A preset's pool settings."""

    name: str
    desired_instances: int | None
    ttl_seconds: int
    timezone: str
    autoscale: dict[str, Any] | None = None
    target_expression: str | None = None
    schedules: tuple[Schedule, ...] = ()


async def preset_pool(conn: Conn, preset_id: UUID) -> PresetPool | None:
    row = await fetch_one(conn, "prebuilds.preset_pool", {"preset_id": preset_id})
    return None if row is None else PresetPool(**row)


async def set_pool(
    conn: Conn,
    preset_id: UUID,
    desired_instances: int | None,
    ttl_seconds: int,
    timezone: str,
    now: datetime,
    *,
    autoscale: dict[str, Any] | None = None,
    target_expression: str | None = None,
) -> PresetPool | None:
    row = await fetch_one(
        conn,
        "prebuilds.set_pool",
        {
            "preset_id": preset_id,
            "desired_instances": desired_instances,
            "ttl_seconds": ttl_seconds,
            "timezone": timezone,
            "autoscale": None if autoscale is None else jsonb(autoscale),
            "target_expression": target_expression,
            "now": now,
        },
    )
    return None if row is None else PresetPool(**row)


async def replace_schedules(conn: Conn, preset_id: UUID, schedules: Sequence[Schedule]) -> None:
    await execute(conn, "prebuilds.delete_schedules", {"preset_id": preset_id})
    for position, schedule in enumerate(schedules):
        await execute(
            conn,
            "prebuilds.insert_schedule",
            {
                "preset_id": preset_id,
                "position": position,
                "cron": schedule.cron,
                "desired_instances": schedule.instances,
            },
        )


async def preset_schedules(conn: Conn, preset_id: UUID) -> list[Schedule]:
    return await fetch_all_as(conn, "prebuilds.preset_schedules", {"preset_id": preset_id}, Schedule)


async def reset_failures(conn: Conn, preset_ids: Sequence[UUID], now: datetime) -> None:
    """Earlier failures stop counting (they stay as evidence)."""
    await execute(conn, "prebuilds.reset_failures", {"preset_ids": list(preset_ids), "now": now})


async def clear_trackers(conn: Conn, preset_ids: Sequence[UUID]) -> None:
    await execute(conn, "prebuilds.clear_trackers", {"preset_ids": list(preset_ids)})


@dataclass(frozen=True)
class FailedPrebuild:
    """A failed prebuild kept as evidence: its latest build is a start that failed."""

    workspace_id: UUID
    workspace_name: str
    preset_id: UUID | None
    preset_name: str | None
    template_name: str
    job_id: UUID
    error: str | None
    failure_class: str | None
    build_created_at: datetime
    job_completed_at: datetime | None


async def failed_prebuilds(
    conn: Conn, organization_id: UUID, template: str | None, preset: str | None
) -> list[FailedPrebuild]:
    return await fetch_all_as(
        conn,
        "prebuilds.failed_prebuilds",
        {
            "prebuilds_user_id": PREBUILDS_USER_ID,
            "organization_id": organization_id,
            "template": template,
            "preset": preset,
        },
        FailedPrebuild,
    )


# -- demand (the autoscaler's input, SPEC §5.2) -----------------------------------------------------------

PoolKey = tuple[UUID, str]
"""A pool across versions: template id and preset name."""


async def snapshot_demand(conn: Conn, pools: Sequence[PoolKey], now: datetime) -> dict[PoolKey, Demand]:
    """The demand of every given pool that has demand records, in one statement whatever their number."""
    if not pools:
        return {}
    template_ids = list(dict.fromkeys(p[0] for p in pools))
    rows = await fetch_all(
        conn,
        "reconcile.snapshot_demand",
        {
            "template_ids": template_ids,
            "now": now,
            "burst_seconds": int(BURST_LOOKBACK.total_seconds()),
            "burst_minute": BURST_MINUTE,
            "burst_limit": BURST_MAX_MINUTES,
        },
    )
    if not rows:
        return {}
    asked = set(pools)
    out: dict[PoolKey, Demand] = {}
    for r in rows:
        key = (r["template_id"], r["preset_name"])
        if key not in asked:  # another version's preset of the same template: not asked for
            continue
        out[key] = Demand(
            claims=tuple(int(r[f"claims_{m}m"]) for m in WINDOWS),
            misses=tuple(int(r[f"misses_{m}m"]) for m in WINDOWS),
            day=int(r["day"]),
            claims_hour=int(r["claims_hour"]),
            first_at=r["first_at"],
            weekly_next_15m=int(r["weekly_next_15m"] or 0),
            weekly_next_60m=int(r["weekly_next_60m"] or 0),
            daily_next_15m=int(r["daily_next_15m"] or 0),
            daily_next_60m=int(r["daily_next_60m"] or 0),
            ready_p90_seconds=None if r["ready_p90_seconds"] is None else float(r["ready_p90_seconds"]),
            ready_mean_seconds=None if r["ready_mean_seconds"] is None else float(r["ready_mean_seconds"]),
            ready_samples=int(r["ready_samples"]),
            busy_minutes=tuple(
                (m, int(n)) for m, n in zip(r["busy_minutes"] or (), r["busy_counts"] or (), strict=True)
            ),
        )
    return out


@dataclass(frozen=True)
class ReadyTime:
    workspace_id: UUID
    template_id: UUID
    preset_name: str
    created_at: datetime
    ready_at: datetime


async def record_ready_times(conn: Conn, times: Sequence[ReadyTime]) -> None:
    if not times:
        return
    await execute(
        conn,
        "reconcile.record_ready_times",
        {
            "workspace_ids": [t.workspace_id for t in times],
            "template_ids": [t.template_id for t in times],
            "preset_names": [t.preset_name for t in times],
            "created_ats": [t.created_at for t in times],
            "ready_ats": [t.ready_at for t in times],
        },
    )


async def prune_demand(conn: Conn, before: datetime) -> None:
    await execute(conn, "reconcile.prune_demand", {"before": before})


@dataclass(frozen=True)
class SavedAutoscale:
    template_id: UUID
    preset_name: str
    state: AutoscaleState


async def save_autoscale_states(conn: Conn, states: Sequence[SavedAutoscale]) -> None:
    if not states:
        return
    await execute(
        conn,
        "reconcile.save_autoscale_states",
        {
            "template_ids": [s.template_id for s in states],
            "preset_names": [s.preset_name for s in states],
            "targets": [s.state.target for s in states],
            "raised_ats": [s.state.raised_at for s in states],
            "changed_ats": [s.state.changed_at for s in states],
        },
    )
