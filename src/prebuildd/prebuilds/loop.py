"""The reconcile loop: take the cycle lock, read one global snapshot, plan (pure), execute, record (SPEC §5).

Locking: the cycle lock is a session advisory lock taken with ``pg_try_advisory_lock`` on a dedicated autocommit
connection at the start of each cycle and released at its end. That connection is never inside a transaction, so
nothing sits "idle in transaction" while actions run; the snapshot has its own short read-only REPEATABLE READ
transaction, and each action its own short write transaction. The cycle lock only avoids duplicate work: what
guarantees the invariant is the per-preset transaction lock plus re-count taken by every create, so replicas
that race (or a lock lost with its connection) still never exceed a target.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import structlog
from psycopg import IsolationLevel

from prebuildd.domain.errors import BuildError
from prebuildd.domain.failures import FailurePolicy, failure_inputs, hard_limit
from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.domain.jobs import BuildReason, JobPriority, Transition
from prebuildd.domain.planner import Plan, PresetSnapshot, pace, plan_preset
from prebuildd.domain.schedules import Schedule
from prebuildd.domain.snapshot import (
    PrebuildRow,
    PresetRow,
    PresetRows,
    group,
    inflight_jobs,
    preset_snapshot,
)
from prebuildd.runtime.notify import WebhookNotifier
from prebuildd.services import Services
from prebuildd.store import channels
from prebuildd.store.db import Conn, execute, fetch_all, fetch_all_as, fetch_one
from prebuildd.workspaces.builder import BuildRequest, prebuild_name

log = structlog.get_logger(__name__)

CYCLE_LOCK = 0x70726563  # "prec"


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


@dataclass
class CycleResult:
    snapshot: Snapshot
    plans: list[Plan]
    created: int = 0
    deleted: int = 0
    canceled: int = 0
    failures: list[str] = field(default_factory=list)
    duration: float = 0.0
    queries: int = 0


@dataclass(frozen=True)
class _Event:
    kind: str
    preset: PresetRow
    message: str
    workspace_id: UUID | None = None
    data: dict[str, Any] = field(default_factory=dict)


class Reconciler:
    def __init__(self, services: Services, *, use_cycle_lock: bool = True, debounce: float = 0.1) -> None:
        self.services = services
        self.config = services.config
        self.clock = services.clock
        self.use_cycle_lock = use_cycle_lock
        self.debounce = debounce
        self.policy = FailurePolicy(
            backoff_interval=timedelta(seconds=self.config.backoff_interval),
            backoff_lookback=timedelta(seconds=self.config.backoff_lookback),
            max_backoff=timedelta(seconds=self.config.max_backoff),
            hard_limit=self.config.failure_hard_limit,
        )
        size = self.config.reconcile_concurrency or max(1, min(5, services.db.pool.max_size // 2))
        self._concurrency = asyncio.Semaphore(size)
        self._kicked = asyncio.Event()
        self._lock_conn: Conn | None = None
        self._last_decisions: dict[UUID, str] = {}
        self._last_prune: datetime | None = None
        self.last_result: CycleResult | None = None
        self.holds_lock = False
        self.newly_hard_limited: list[PresetRow] = []
        url = self.config.notify_webhook
        self.notifier: WebhookNotifier | None = WebhookNotifier(url) if url else None
        self.cycles = 0
        self.on_cycle: list[Any] = []
        """Callbacks ``f(result)`` after each cycle (metrics)."""

    # -- triggers ------------------------------------------------------------------------------------------

    def kick(self, reason: str = "") -> None:
        """Run a cycle soon (coalesced with other kicks within the debounce window)."""
        log.debug("reconcile.kicked", reason=reason)
        self._kicked.set()

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == channels.JOB_COMPLETED:
            self.kick("job completed")

    async def run(self) -> None:
        """The loop: a cycle every interval, or sooner when kicked."""
        self.services.listener.add_handler(self._on_notify)
        self.services.kick_hooks.append(self.kick)
        try:
            while True:
                try:
                    await self.run_cycle()
                except (psycopg.Error, OSError) as exc:
                    log.warning("reconcile.cycle_failed", error=str(exc))
                    await self._drop_lock_conn()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kicked.wait(), timeout=self.config.reconcile_interval)
                    await asyncio.sleep(self.debounce)  # let a burst of kicks make one cycle
                self._kicked.clear()
        finally:
            await self._drop_lock_conn()

    # -- one cycle -----------------------------------------------------------------------------------------

    async def run_cycle(self) -> CycleResult | None:
        started = time.perf_counter()
        if self.use_cycle_lock and not await self._try_lock():
            self.holds_lock = False
            self.services.metrics.lock_holder.set(0)
            log.debug("reconcile.skipped", reason="another replica holds the cycle lock")
            return None
        self.holds_lock = True
        # A cycle allocates tens of thousands of short-lived, acyclic objects: collecting during it only
        # rescans the long-lived heap (measured: a third of a no-op cycle at 1,000 presets). Collect after.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            snap = await self.snapshot()
            plans = [plan_preset(s, snap.taken_at, paused=snap.paused) for s in snap.snapshots]
            plans = pace(plans, snap.inflight, self.config.max_inflight_prebuild_jobs)
            result = CycleResult(snap, plans, queries=4)
            await self._record_status(snap, result)
            if not snap.paused:
                await asyncio.gather(
                    *(self._execute(snap.presets[p.preset_id], p, result) for p in plans if p.actions)
                )
            await self._record(snap, result)
            await self._prune_events(snap.taken_at)
        finally:
            if gc_was_enabled:
                gc.enable()
            if self.use_cycle_lock:
                await self._unlock()
        result.duration = time.perf_counter() - started
        self.last_result = result
        self._observe(result)
        self.cycles += 1
        for callback in self.on_cycle:
            callback(result)
        log.info(
            "reconcile.cycle",
            presets=len(plans),
            created=result.created,
            deleted=result.deleted,
            canceled=result.canceled,
            paused=snap.paused,
            duration_ms=round(result.duration * 1000, 1),
        )
        return result

    async def snapshot(self) -> Snapshot:
        """The global snapshot: three queries in one read-only REPEATABLE READ transaction, whatever the size."""
        async with self.services.db.transaction(
            isolation=IsolationLevel.REPEATABLE_READ, readonly=True
        ) as conn:
            now = self.clock.now()
            settings = await fetch_one(conn, "reconcile.settings")
            preset_rows = await fetch_all(
                conn, "reconcile.snapshot_presets", {"prebuilds_user_id": PREBUILDS_USER_ID}
            )
            prebuilds = await fetch_all_as(
                conn, "reconcile.snapshot_prebuilds", {"prebuilds_user_id": PREBUILDS_USER_ID}, PrebuildRow
            )
            queue = await fetch_one(conn, "reconcile.queue_depth")
            presets = [_preset_row(r) for r in preset_rows]
            grouped = group(presets, prebuilds)
            await self._creation_history(conn, grouped)
        inputs = failure_inputs(self.policy, now)
        retry = timedelta(seconds=self.config.backoff_interval)
        snapshots = [
            preset_snapshot(rows, delete_retry=retry, failure_inputs=inputs) for rows in grouped.values()
        ]
        return Snapshot(
            taken_at=now,
            paused=bool(settings and settings["reconciliation_paused"]),
            presets={p.preset_id: p for p in presets},
            snapshots=snapshots,
            prebuilds=prebuilds,
            history_by_preset={
                preset_id: rows.prebuilds if rows.creations is None else rows.creations
                for preset_id, rows in grouped.items()
            },
            inflight=inflight_jobs(prebuilds),
            queue_depth=int(queue["pending"]) if queue else 0,
            oldest_pending=queue["oldest"] if queue else None,
        )

    def _observe(self, result: CycleResult) -> None:
        snap, metrics = result.snapshot, self.services.metrics
        metrics.observe_cycle(
            snap.presets,
            result.plans,
            paused=snap.paused,
            duration=result.duration,
            ended_at=self.clock.now(),
            failed_ids=[
                (r.workspace_id, r.preset_id)
                for r in snap.prebuilds
                if r.preset_id and r.transition == "start" and r.job_status == "failed"
            ],
        )
        metrics.lock_holder.set(1 if self.holds_lock else 0)
        metrics.queue_depth.set(snap.queue_depth)
        age = (snap.taken_at - snap.oldest_pending).total_seconds() if snap.oldest_pending else 0
        metrics.oldest_pending.set(max(age, 0))

    async def _creation_history(self, conn: Conn, grouped: dict[UUID, PresetRows]) -> None:
        """For presets with failures in their pool, read their newest creations, claimed ones included, so that
        a claimed success still breaks a run of failures. Healthy presets need no extra read (one query at most,
        whatever the number of presets)."""
        failing = [r for r in grouped.values() if any(p.job_status == "failed" for p in r.prebuilds)]
        if not failing:
            return
        keep = [max(r.preset.desired_instances or 0, self.policy.hard_limit, 1) for r in failing]
        rows = await fetch_all_as(
            conn,
            "reconcile.snapshot_creations",
            {
                "preset_ids": [r.preset.preset_id for r in failing],
                "keep": keep,
            },
            PrebuildRow,
        )
        for r in failing:
            r.creations = []
        for row in rows:
            if row.preset_id in grouped:
                creations = grouped[row.preset_id].creations
                assert creations is not None
                creations.append(row)

    # -- executing -----------------------------------------------------------------------------------------

    async def _execute(self, preset: PresetRow, plan: Plan, result: CycleResult) -> None:
        async with self._concurrency:
            for cancel in plan.cancels:
                status = await self.services.queue.cancel(cancel.job_id)
                if status == "canceled" and await self._delete(cancel.workspace_id, "inactive version"):
                    result.canceled += 1
            for delete in plan.deletes:
                if await self._delete(delete.workspace_id, delete.reason.value):
                    result.deleted += 1
            if plan.create:
                created = await self._create(preset, plan, result)
                result.created += created  # not `+= await`: that reads the total before the await

    async def _delete(self, workspace_id: UUID, reason: str) -> bool:
        req = BuildRequest(
            transition=Transition.DELETE,
            initiator_id=PREBUILDS_USER_ID,
            workspace_id=workspace_id,
            reason=BuildReason.PREBUILD,
            priority=JobPriority.PREBUILD,
            expected_owner_id=PREBUILDS_USER_ID,
        )
        try:
            async with self.services.db.transaction() as conn:
                created = await self.services.builder.build(conn, req)
        except BuildError as exc:
            # Claimed meanwhile, or a build started: the next cycle sees the new state.
            log.info(
                "prebuild.delete_skipped", workspace_id=str(workspace_id), reason=reason, error=exc.message
            )
            return False
        log.info(
            "prebuild.delete", workspace_id=str(workspace_id), reason=reason, orphan=created.orphan_deleted
        )
        return True

    async def _create(self, preset: PresetRow, plan: Plan, result: CycleResult) -> int:
        created = 0
        for _ in range(plan.create):
            req = BuildRequest(
                transition=Transition.START,
                initiator_id=PREBUILDS_USER_ID,
                owner_id=PREBUILDS_USER_ID,
                organization_id=preset.organization_id,
                template_id=preset.template_id,
                name=prebuild_name(),
                version_id=preset.version_id,
                preset_id=preset.preset_id,
                reason=BuildReason.PREBUILD,
                priority=JobPriority.PREBUILD,
            )
            try:
                if not await self._create_one(preset, plan.state.desired, req):
                    break
            except BuildError as exc:
                result.failures.append(f"{preset.template_name}/{preset.preset_name}: {exc.message}")
                await self._creation_refused(preset, req, exc)
                break  # the remaining creates would fail the same way (SPEC §6.2)
            created += 1
        if created and preset.consecutive_failures:
            async with self.services.db.transaction() as conn:
                await execute(conn, "failures.clear_transient", {"preset_id": preset.preset_id})
        return created

    async def _create_one(self, preset: PresetRow, desired: int, req: BuildRequest) -> bool:
        """One create under the preset's lock, after re-counting: never above the target, whatever else runs."""
        async with self.services.db.transaction(isolation=IsolationLevel.READ_COMMITTED) as conn:
            await execute(conn, "reconcile.lock_preset", {"preset_id": preset.preset_id})
            counts = await fetch_one(
                conn,
                "reconcile.count_pool",
                {
                    "preset_id": preset.preset_id,
                    "prebuilds_user_id": PREBUILDS_USER_ID,
                    "now": self.clock.now(),
                    "invalidated_at": preset.last_invalidated_at,
                    "ttl_seconds": preset.ttl_seconds,
                },
            )
            assert counts is not None
            if counts["running_valid"] + counts["starting"] >= desired:
                log.info(
                    "prebuild.create_skipped",
                    preset_id=str(preset.preset_id),
                    reason="target already met (re-counted under the preset lock)",
                    desired=desired,
                    running_valid=counts["running_valid"],
                    starting=counts["starting"],
                )
                return False
            created = await self.services.builder.build(conn, req)
        self.services.metrics.created.labels(*self.services.metrics.labels(preset)).inc()
        log.info("prebuild.create", preset_id=str(preset.preset_id), workspace_id=str(created.workspace_id))
        return True

    async def _creation_refused(self, preset: PresetRow, req: BuildRequest, exc: BuildError) -> None:
        log.warning(
            "prebuild.create_failed",
            preset_id=str(preset.preset_id),
            status=exc.status,
            transient=exc.is_transient,
            error=exc.message,
        )
        if exc.is_transient:
            async with self.services.db.transaction() as conn:
                await execute(
                    conn,
                    "failures.record_transient",
                    {
                        "preset_id": preset.preset_id,
                        "now": self.clock.now(),
                        "error": exc.message,
                    },
                )
            return
        try:
            await self.services.builder.record_failed_build(self.services.db, req, exc)
        except (BuildError, psycopg.Error) as record_exc:
            log.error(
                "prebuild.failed_record_not_written", preset_id=str(preset.preset_id), error=str(record_exc)
            )

    # -- recording -----------------------------------------------------------------------------------------

    async def _record_status(self, snap: Snapshot, result: CycleResult) -> None:
        """Store hard-limit transitions (even while paused), with their reason and last error."""
        changes: list[tuple[PresetRow, str, str | None, str]] = []
        for s in snap.snapshots:
            preset = snap.presets[s.preset_id]
            status = "hard_limited" if s.hard_limited and s.active else "healthy"
            if status == preset.prebuild_status:
                continue
            limit = (
                hard_limit(preset, snap.history_by_preset.get(s.preset_id, []), self.policy)
                if s.active
                else None
            )
            changes.append(
                (preset, status, limit.reason_class if limit else None, limit.last_error if limit else "")
            )
        if not changes:
            return
        async with self.services.db.transaction() as conn:
            for preset, status, reason_class, error in changes:
                await execute(
                    conn,
                    "failures.set_status",
                    {
                        "preset_id": preset.preset_id,
                        "status": status,
                        "reason": reason_class,
                        "error": error or None,
                        "now": snap.taken_at,
                    },
                )
        limited = [(c[0], c[2], c[3]) for c in changes if c[1] == "hard_limited"]
        self.newly_hard_limited = [p for p, _, _ in limited]
        for preset, status, _, error in changes:
            log.warning(
                "prebuild.status_changed",
                preset=f"{preset.template_name}/{preset.preset_name}",
                status=status,
                error=error,
            )
        limit_n = self.policy.hard_limit
        events = [
            _Event(
                "prebuild.hard_limited",
                p,
                f"hard-limited: last {limit_n} creations failed: {error}",
                data={"reason": reason},
            )
            for p, reason, error in limited
        ]
        events += [_Event("prebuild.healthy", c[0], "healthy again") for c in changes if c[1] == "healthy"]
        await self._insert_events(snap.taken_at, events)
        if limited and self.notifier is not None:
            self.notifier.hard_limited(
                [
                    {
                        "organization_id": str(p.organization_id),
                        "template": p.template_name,
                        "preset": p.preset_name,
                        "version": p.version_name,
                        "reason": reason,
                        "last_error": error,
                    }
                    for p, reason, error in limited
                ]
            )

    async def _record(self, snap: Snapshot, result: CycleResult) -> None:
        """An event per preset whose decision changed since the last cycle (bounded writes at any scale)."""
        events: list[_Event] = []
        for plan in result.plans:
            preset = snap.presets[plan.preset_id]
            text = plan.blocked or plan.reason
            if plan.blocked and plan.wanted_creates:
                text = f"{plan.reason}; {plan.blocked}"
            if self._last_decisions.get(plan.preset_id) != text or plan.actions:
                self._last_decisions[plan.preset_id] = text
                events.append(
                    _Event(
                        "reconcile.decision",
                        preset,
                        text,
                        data={
                            "create": plan.create,
                            "deletes": [d.reason.value for d in plan.deletes],
                            "cancels": len(plan.cancels),
                            "desired": plan.state.desired,
                            "running": plan.state.running_valid,
                            "starting": plan.state.starting,
                        },
                    )
                )
        await self._insert_events(snap.taken_at, events)

    async def _insert_events(self, now: datetime, events: list[_Event]) -> None:
        if not events:
            return
        async with self.services.db.transaction() as conn:
            await execute(
                conn,
                "reconcile.insert_events",
                {
                    "now": now,
                    "kinds": [e.kind for e in events],
                    "organization_ids": [e.preset.organization_id for e in events],
                    "template_ids": [e.preset.template_id for e in events],
                    "preset_ids": [e.preset.preset_id for e in events],
                    "workspace_ids": [e.workspace_id for e in events],
                    "messages": [e.message for e in events],
                    "datas": [json.dumps(e.data) for e in events],
                },
            )

    async def _prune_events(self, now: datetime) -> None:
        if self._last_prune is not None and now - self._last_prune < timedelta(hours=1):
            return
        self._last_prune = now
        async with self.services.db.transaction() as conn:
            await execute(
                conn,
                "reconcile.prune_events",
                {"before": now - timedelta(seconds=self.config.event_retention)},
            )

    # -- the cycle lock ------------------------------------------------------------------------------------

    async def _try_lock(self) -> bool:
        if self._lock_conn is None or self._lock_conn.closed:
            self._lock_conn = await self.services.db.connect()
        row = await fetch_one(self._lock_conn, "reconcile.try_cycle_lock", {"key": CYCLE_LOCK})
        return bool(row and row["locked"])

    async def _unlock(self) -> None:
        if self._lock_conn is not None and not self._lock_conn.closed:
            try:
                await fetch_one(self._lock_conn, "reconcile.cycle_unlock", {"key": CYCLE_LOCK})
            except psycopg.Error:
                await self._drop_lock_conn()

    async def _drop_lock_conn(self) -> None:
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                await self._lock_conn.close()
            self._lock_conn = None


def _preset_row(row: dict[str, Any]) -> PresetRow:
    schedules = tuple(Schedule(s["cron"], s["instances"]) for s in row.pop("schedules") or ())
    return PresetRow(schedules=schedules, **row)
