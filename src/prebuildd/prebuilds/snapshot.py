"""The snapshot reader: the one global snapshot of every pool, read with a fixed number of queries whatever the
number of presets (SPEC §5 step 2). The reconcile loop plans from it, and ``prebuilds status``/``explain`` read
the same one, so what they say is what the next cycle does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from prebuildd.domain.autoscale import Demand
from prebuildd.domain.failures import FailurePolicy, failure_inputs
from prebuildd.domain.planner import PresetSnapshot
from prebuildd.domain.snapshot import (
    PrebuildRow,
    PresetRow,
    PresetRows,
    group,
    inflight_jobs,
    preset_snapshot,
)
from prebuildd.domain.targets import NO_DEMAND, PoolTarget, pool_target
from prebuildd.runtime.clock import Clock
from prebuildd.runtime.config import ServerConfig
from prebuildd.store import prebuilds as store
from prebuildd.store.db import Conn, Database, IsolationLevel

SNAPSHOT_QUERIES = 5
"""Queries of every snapshot (settings, presets, prebuilds, queue depth, demand); one more when some pool has
failures."""


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    paused: bool
    presets: dict[UUID, PresetRow]
    snapshots: list[PresetSnapshot]
    prebuilds: list[PrebuildRow]
    history_by_preset: dict[UUID, list[PrebuildRow]]
    """The rows the failure maths read for each preset (its creation history when it has failures)."""
    inflight: int
    queue_depth: int = 0
    oldest_pending: datetime | None = None
    targets: dict[UUID, PoolTarget] = field(default_factory=dict)
    """Where each preset's target came from (autoscale decisions, recommended sizes)."""
    demand: dict[UUID, Demand] = field(default_factory=dict)


def failure_policy(config: ServerConfig) -> FailurePolicy:
    return FailurePolicy(
        backoff_interval=timedelta(seconds=config.backoff_interval),
        backoff_lookback=timedelta(seconds=config.backoff_lookback),
        max_backoff=timedelta(seconds=config.max_backoff),
        hard_limit=config.failure_hard_limit,
    )


class SnapshotReader:
    def __init__(
        self, db: Database, clock: Clock, policy: FailurePolicy, *, idle_timeout: float = 10.0
    ) -> None:
        self.db = db
        self.clock = clock
        self.policy = policy
        self.idle_timeout = idle_timeout
        """Longest idle time inside the snapshot transaction before the server ends the session (a frozen
        replica would otherwise hold its snapshot and its table locks, which a migration's DDL waits for)."""

    @classmethod
    def from_config(cls, db: Database, clock: Clock, config: ServerConfig) -> SnapshotReader:
        return cls(db, clock, failure_policy(config))

    async def read(self) -> Snapshot:
        """Five queries (six when a pool has failures) in one read-only REPEATABLE READ transaction."""
        async with self.db.transaction(isolation=IsolationLevel.REPEATABLE_READ, readonly=True) as conn:
            now = self.clock.now()
            paused = await store.snapshot_paused(conn, idle_timeout=self.idle_timeout)
            presets = await store.snapshot_presets(conn)
            prebuilds = await store.snapshot_prebuilds(conn)
            queue = await store.queue_depth(conn)
            keys = list(dict.fromkeys((p.template_id, p.preset_name) for p in presets))
            demand_by_pool = await store.snapshot_demand(conn, keys, now)
            grouped = group(presets, prebuilds)
            await self._creation_history(conn, grouped)
        inputs = failure_inputs(self.policy, now)
        retry = self.policy.backoff_interval
        demand = {p.preset_id: demand_by_pool.get((p.template_id, p.preset_name), NO_DEMAND) for p in presets}
        targets = {
            rows.preset.preset_id: pool_target(
                preset_snapshot(rows, delete_retry=retry, failure_inputs=inputs),
                rows.preset,
                demand[rows.preset.preset_id],
                now,
            )
            for rows in grouped.values()
        }
        snapshots = [t.snapshot for t in targets.values()]
        return Snapshot(
            taken_at=now,
            paused=paused,
            presets={p.preset_id: p for p in presets},
            snapshots=snapshots,
            prebuilds=prebuilds,
            history_by_preset={
                preset_id: rows.prebuilds if rows.creations is None else rows.creations
                for preset_id, rows in grouped.items()
            },
            inflight=inflight_jobs(prebuilds),
            queue_depth=queue.pending,
            oldest_pending=queue.oldest,
            targets=targets,
            demand=demand,
        )

    async def _creation_history(self, conn: Conn, grouped: dict[UUID, PresetRows]) -> None:
        """For presets with failures in their pool, read their newest creations, claimed ones included, so that
        a claimed success still breaks a run of failures. Healthy presets need no extra read (one query at most,
        whatever the number of presets)."""
        failing = [r for r in grouped.values() if any(p.job_status == "failed" for p in r.prebuilds)]
        if not failing:
            return
        keep = [max(r.preset.desired_instances or 0, self.policy.hard_limit, 1) for r in failing]
        rows = await store.creation_history(conn, [r.preset.preset_id for r in failing], keep)
        creations: dict[UUID, list[PrebuildRow]] = {r.preset.preset_id: [] for r in failing}
        for row in rows:
            if row.preset_id is not None and row.preset_id in creations:
                creations[row.preset_id].append(row)
        for r in failing:
            r.creations = creations[r.preset.preset_id]
