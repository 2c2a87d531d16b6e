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
from prebuildd.domain.plancache import TargetCache
from prebuildd.domain.planner import PresetSnapshot
from prebuildd.domain.snapshot import PrebuildRow, PresetRow, PresetRows, preset_snapshot
from prebuildd.domain.targets import NO_DEMAND, PoolTarget, pool_target
from prebuildd.runtime.clock import Clock
from prebuildd.runtime.config import ServerConfig
from prebuildd.store import prebuilds as store
from prebuildd.store.db import Conn, Database, IsolationLevel


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
    queries: int = 0
    """Statements the snapshot took: three, one more when some pool acts or has failures, and one more when some
    has failed builds, whatever the number of presets."""


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
        self._rows = store.PresetRowCache()
        self._targets_cache = TargetCache(policy)
        """Pools at rest: the previous read's rows and targets, reused while unchanged (``domain.plancache``)."""
        self._kept: dict[UUID, _KeptRows] = {}
        """Pools read row by row (failures kept as evidence, say): the rows last read, reused while the pool's
        fingerprint is unchanged and it has nothing in flight."""

    @classmethod
    def from_config(cls, db: Database, clock: Clock, config: ServerConfig) -> SnapshotReader:
        return cls(db, clock, failure_policy(config))

    async def read(self) -> Snapshot:
        """One read-only REPEATABLE READ transaction: settings and queue depth, presets with their pools
        aggregated, demand; then the rows of the pools that need them (some prebuild to act on, a failure, a time
        to ready to record), and the creation history of those with failures. Pools at rest are planned from their
        counts, so the cost of a cycle follows the pools that change, not the number of presets."""
        async with self.db.transaction(isolation=IsolationLevel.REPEATABLE_READ, readonly=True) as conn:
            now = self.clock.now()
            settings = await store.snapshot_settings(conn, idle_timeout=self.idle_timeout)
            read = await store.snapshot_presets(conn, now, self._rows)
            presets = read.presets
            keys = list(dict.fromkeys((p.template_id, p.preset_name) for p in presets))
            demand_by_pool = await store.snapshot_demand(conn, keys, now)
            queries = 3 if keys else 2
            if demand_by_pool:
                demand = {
                    p.preset_id: demand_by_pool.get((p.template_id, p.preset_name), NO_DEMAND)
                    for p in presets
                }
            else:
                demand = dict.fromkeys((p.preset_id for p in presets), NO_DEMAND)
            # Pools at rest by their counts are planned from them (and from the previous cycle's answer while
            # nothing changed); the others are read row by row. A pool at rest may still have deletes to make
            # (above its target, inactive): rows too.
            resting: dict[UUID, PoolTarget] = {}
            wanted: list[PresetRow] = []
            summaries: dict[UUID, store.PoolSummary] = {}
            cache = self._targets_cache
            for p, pool in zip(presets, read.pools, strict=True):
                summaries[p.preset_id] = pool
                if pool.needs_rows or p.consecutive_failures:
                    wanted.append(p)
                    continue
                target, needs = cache.target(p, pool.running, pool.ready, demand[p.preset_id], now)
                if needs:
                    wanted.append(p)
                else:
                    resting[p.preset_id] = target
            cache.retain(presets)
            grouped = {p.preset_id: PresetRows(p) for p in wanted}
            prebuilds: list[PrebuildRow] = []
            kept = self._kept
            to_read: list[UUID] = []
            for p in wanted:
                seen = kept.get(p.preset_id)
                pool = summaries[p.preset_id]
                if seen is not None and seen.fits(pool):
                    grouped[p.preset_id].prebuilds = list(seen.prebuilds)
                    prebuilds += seen.prebuilds
                else:
                    to_read.append(p.preset_id)
            if to_read:
                read_now = await store.snapshot_prebuilds(conn, to_read)
                queries += 1
                for row in read_now:
                    if row.preset_id is not None and row.preset_id in grouped:
                        grouped[row.preset_id].prebuilds.append(row)
                prebuilds += read_now
            if await self._creation_history(conn, list(grouped.values())):
                queries += 1
        fresh = set(to_read)
        self._kept = {
            i: _KeptRows.of(grouped[i], summaries[i]) if i in fresh else kept[i]
            for i in grouped
            if i not in fresh or (summaries[i].inflight == 0 and summaries[i].fingerprint is not None)
        }
        read_rows = self._targets(grouped, demand, now)
        if read_rows:
            targets = {p.preset_id: resting.get(p.preset_id) or read_rows[p.preset_id] for p in presets}
        else:
            targets = resting
        return Snapshot(
            taken_at=now,
            paused=settings.paused,
            presets={p.preset_id: p for p in presets},
            snapshots=[t.snapshot for t in targets.values()],
            prebuilds=prebuilds,
            history_by_preset={
                preset_id: rows.prebuilds if rows.creations is None else rows.creations
                for preset_id, rows in grouped.items()
            },
            inflight=read.inflight,
            queue_depth=settings.queue.pending,
            oldest_pending=settings.queue.oldest,
            targets=targets,
            demand=demand,
            queries=queries,
        )

    def _targets(
        self,
        grouped: dict[UUID, PresetRows],
        demand: dict[UUID, Demand],
        now: datetime,
    ) -> dict[UUID, PoolTarget]:
        inputs = failure_inputs(self.policy, now)
        retry = self.policy.backoff_interval
        return {
            preset_id: pool_target(
                preset_snapshot(rows, delete_retry=retry, failure_inputs=inputs),
                rows.preset,
                demand[preset_id],
                now,
            )
            for preset_id, rows in grouped.items()
        }

    async def _creation_history(self, conn: Conn, pools: list[PresetRows]) -> bool:
        """For presets with failures in their pool, read their newest creations, claimed ones included, so that
        a claimed success still breaks a run of failures. Healthy presets need no extra read (one query at most,
        whatever the number of presets). True when it read."""
        failing = [r for r in pools if any(p.job_status == "failed" for p in r.prebuilds)]
        if not failing:
            return False
        keep = [max(r.preset.desired_instances or 0, self.policy.hard_limit, 1) for r in failing]
        rows = await store.creation_history(conn, [r.preset.preset_id for r in failing], keep)
        creations: dict[UUID, list[PrebuildRow]] = {r.preset.preset_id: [] for r in failing}
        for row in rows:
            if row.preset_id is not None and row.preset_id in creations:
                creations[row.preset_id].append(row)
        for r in failing:
            r.creations = creations[r.preset.preset_id]
        return True


@dataclass(frozen=True, slots=True)
class _KeptRows:
    """A pool's rows as last read, with the fingerprint they were read under. A row is its prebuild's latest
    build and job with its agents' state, so with nothing in flight it changes only through what the
    fingerprint covers: a build added or gone (its job's id), a job's status, an agent's lifecycle or readiness,
    a time to ready recorded. (Its creation history is read afresh: a prebuild created and claimed between two
    cycles leaves the pool's rows as they were but not its history.)"""

    fingerprint: int
    prebuilds: tuple[PrebuildRow, ...]

    @classmethod
    def of(cls, rows: PresetRows, pool: store.PoolSummary) -> _KeptRows:
        assert pool.fingerprint is not None
        return cls(pool.fingerprint, tuple(rows.prebuilds))

    def fits(self, pool: store.PoolSummary) -> bool:
        return pool.inflight == 0 and pool.fingerprint == self.fingerprint
