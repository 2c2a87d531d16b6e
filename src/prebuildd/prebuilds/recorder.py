"""The recorder: what a cycle leaves behind besides builds. Hard-limit transitions (stored, logged, notified),
one decision event per preset whose decision changed, transient failure counters (the backoff), the pool-size
history (a sample per pool whose counts changed, all of them in one statement), and the pruning of old events,
demand and history. Bounded writes at any scale: nothing is written for a preset whose state did not change. Writes
that lock rows wait for those locks a bounded time (a frozen replica may hold them) and are left to the next cycle
when they time out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import structlog

from prebuildd.domain.failures import FailurePolicy, hard_limit
from prebuildd.domain.planner import Plan
from prebuildd.domain.snapshot import PresetRow
from prebuildd.domain.targets import stored_state
from prebuildd.domain.words import plural
from prebuildd.prebuilds.snapshot import Snapshot
from prebuildd.runtime.notify import WebhookNotifier
from prebuildd.store import pool_history
from prebuildd.store import prebuilds as store
from prebuildd.store.db import Conn, Database
from prebuildd.store.errors import StoreTimeout
from prebuildd.store.prebuilds import NewEvent

log = structlog.get_logger(__name__)

PRUNE_EVERY = timedelta(hours=1)
DEMAND_RETENTION = timedelta(days=35)
"""Claims, misses and times to ready are kept 35 days (SPEC §10): four past weeks at the same hour, and some."""
SAMPLE_EVERY = timedelta(minutes=10)
"""A pool whose counts did not change is sampled again after this long: its history never has a gap longer than
this, so a reader can tell a steady pool from a reconciler that stopped, and pruning never leaves a steady pool
without samples. Between these, a sample is written only when a pool's counts change, which keeps the table
(and the dashboard's 24 h reads) small at thousands of presets while losing nothing: the size between two
samples is the earlier one's."""


@dataclass(frozen=True)
class _StatusChange:
    preset: PresetRow
    status: str
    reason: str | None
    error: str


def _event(kind: str, preset: PresetRow, message: str, data: dict[str, object] | None = None) -> NewEvent:
    return NewEvent(
        kind=kind,
        organization_id=preset.organization_id,
        template_id=preset.template_id,
        preset_id=preset.preset_id,
        message=message,
        data=dict(data or {}),
    )


class Recorder:
    def __init__(
        self,
        db: Database,
        *,
        policy: FailurePolicy,
        event_retention: timedelta,
        pool_history_retention: timedelta = timedelta(days=7),
        notifier: WebhookNotifier | None = None,
        lock_wait: float = 5.0,
        idle_timeout: float = 10.0,
    ) -> None:
        self.db = db
        self.lock_wait = lock_wait
        self.idle_timeout = idle_timeout
        self.policy = policy
        self.event_retention = event_retention
        self.pool_history_retention = pool_history_retention
        self._last_samples: dict[tuple[UUID, str], tuple[datetime, int, int, int]] = {}
        """Per pool (template id, preset name): when this process last sampled it, and the counts it wrote."""
        self.notifier = notifier
        self._last_decisions: dict[UUID, str] = {}
        self._recorded_plans: dict[UUID, Plan] = {}
        self._last_prune: datetime | None = None
        self._ready_recorded: set[UUID] = set()
        """Prebuilds whose time to ready this process has stored (after a restart: stored again, a no-op)."""
        self.newly_hard_limited: list[PresetRow] = []

    # -- statuses ------------------------------------------------------------------------------------------

    async def record_status(self, snap: Snapshot) -> None:
        """Store hard-limit transitions (even while paused), with their reason and last error."""
        changes: list[_StatusChange] = []
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
                _StatusChange(
                    preset, status, limit.reason_class if limit else None, limit.last_error if limit else ""
                )
            )
        if not changes:
            return
        try:
            async with self.db.transaction() as conn:
                await self._bound(conn)
                for c in changes:
                    await store.set_prebuild_status(
                        conn, c.preset.preset_id, c.status, c.reason, c.error or None, snap.taken_at
                    )
        except StoreTimeout as exc:  # the next cycle sees the same change and records it
            self._busy("statuses", exc)
            return
        limited = [c for c in changes if c.status == "hard_limited"]
        self.newly_hard_limited = [c.preset for c in limited]
        for c in changes:
            log.warning(
                "prebuild.status_changed",
                preset=f"{c.preset.template_name}/{c.preset.preset_name}",
                status=c.status,
                error=c.error,
            )
        limit_n = self.policy.hard_limit
        events = [
            _event(
                "prebuild.hard_limited",
                c.preset,
                f"hard-limited: last {plural(limit_n, 'creation')} failed: {c.error}",
                {"reason": c.reason},
            )
            for c in limited
        ]
        events += [
            _event("prebuild.healthy", c.preset, "healthy again") for c in changes if c.status == "healthy"
        ]
        await self._insert_events(snap.taken_at, events)
        if limited and self.notifier is not None:
            self.notifier.hard_limited(
                [
                    {
                        "organization_id": str(c.preset.organization_id),
                        "template": c.preset.template_name,
                        "preset": c.preset.preset_name,
                        "version": c.preset.version_name,
                        "reason": c.reason,
                        "last_error": c.error,
                    }
                    for c in limited
                ]
            )

    # -- decisions -----------------------------------------------------------------------------------------

    async def record_decisions(self, snap: Snapshot, plans: list[Plan]) -> None:
        """An event per preset whose decision changed since the last cycle (bounded writes at any scale)."""
        events: list[NewEvent] = []
        recorded = self._recorded_plans
        for plan in plans:
            if not plan.actions and recorded.get(plan.preset_id) is plan:
                continue  # the plan its decision was last recorded from (a pool at rest): the same text
            recorded[plan.preset_id] = plan
            preset = snap.presets[plan.preset_id]
            text = plan.blocked or plan.reason
            if plan.blocked and plan.wanted_creates:
                text = f"{plan.reason}; {plan.blocked}"
            if self._last_decisions.get(plan.preset_id) != text or plan.actions:
                self._last_decisions[plan.preset_id] = text
                events.append(
                    _event(
                        "reconcile.decision",
                        preset,
                        text,
                        {
                            "create": plan.create,
                            "deletes": [d.reason.value for d in plan.deletes],
                            "cancels": len(plan.cancels),
                            "desired": plan.state.desired,
                            "running": plan.state.running_valid,
                            "starting": plan.state.starting,
                        },
                    )
                )
        if len(recorded) > len(snap.presets):
            self._recorded_plans = {k: v for k, v in recorded.items() if k in snap.presets}
        await self._insert_events(snap.taken_at, events)

    # -- pool-size history ---------------------------------------------------------------------------------

    async def record_pool_sizes(self, snap: Snapshot, plans: list[Plan]) -> int:
        """Sample the pools whose desired, running or eligible count changed since this process last sampled
        them, or that were last sampled ``SAMPLE_EVERY`` ago or more (the first cycle samples every pool): one
        statement for all of them, none in a cycle with nothing to write. How many samples were written."""
        now = snap.taken_at
        samples: list[pool_history.NewPoolSample] = []
        for plan in plans:
            preset = snap.presets[plan.preset_id]
            key = (preset.template_id, preset.preset_name)
            counts = (plan.state.desired, plan.state.running_valid, plan.state.eligible)
            last = self._last_samples.get(key)
            if last is not None and last[1:] == counts and now - last[0] < SAMPLE_EVERY:
                continue
            samples.append(pool_history.NewPoolSample(key[0], key[1], *counts))
        if not samples:
            return 0
        try:
            async with self.db.autocommit() as conn:
                await pool_history.record(conn, now, samples)
        except StoreTimeout as exc:  # sampled by the next cycle (nothing was remembered as written)
            self._busy("pool history", exc)
            return 0
        for sample in samples:
            self._last_samples[(sample.template_id, sample.preset_name)] = (
                now,
                sample.desired,
                sample.running,
                sample.eligible,
            )
        if len(self._last_samples) > 2 * len(plans) + 64:  # forget pools gone (deleted presets, old names)
            live = {(p.template_id, p.preset_name) for p in snap.presets.values()}
            self._last_samples = {k: v for k, v in self._last_samples.items() if k in live}
        return len(samples)

    # -- autoscaling (SPEC §5.2) --------------------------------------------------------------------------

    async def record_autoscale(self, snap: Snapshot) -> None:
        """Store the autoscaler's decisions that changed, and the time to ready of prebuilds newly eligible:
        one statement each, and none at all in a cycle where nothing changed."""
        states = []
        for preset_id, target in snap.targets.items():
            decision = target.decision
            if decision is None or decision.state is None:
                continue
            preset = snap.presets[preset_id]
            if decision.state == stored_state(preset):
                continue
            states.append(store.SavedAutoscale(preset.template_id, preset.preset_name, decision.state))
        seen: set[UUID] = set()
        ready: list[store.ReadyTime] = []
        for row in snap.prebuilds:
            if row.ready_at is None or not row.ready or row.preset_id not in snap.presets:
                continue
            seen.add(row.workspace_id)
            if row.workspace_id not in self._ready_recorded:
                preset = snap.presets[row.preset_id]
                ready.append(
                    store.ReadyTime(
                        row.workspace_id,
                        preset.template_id,
                        preset.preset_name,
                        row.workspace_created_at,
                        row.ready_at,
                    )
                )
        if not states and not ready:
            self._ready_recorded &= seen
            return
        try:
            async with self.db.transaction() as conn:
                await self._bound(conn)
                await store.save_autoscale_states(conn, states)
                await store.record_ready_times(conn, ready)
        except StoreTimeout as exc:  # the next cycle decides and records again
            self._busy("autoscale", exc)
            return
        self._ready_recorded = (self._ready_recorded & seen) | {t.workspace_id for t in ready}
        for s in states:
            log.info(
                "autoscale.target_changed",
                template_id=str(s.template_id),
                preset=s.preset_name,
                target=s.state.target,
            )

    # -- transient failures (the backoff) ------------------------------------------------------------------

    async def transient_failure(self, preset: PresetRow, now: datetime, error: str) -> None:
        try:
            async with self.db.transaction() as conn:
                await self._bound(conn)
                await store.record_transient_failure(conn, preset.preset_id, now, error)
        except StoreTimeout as exc:
            self._busy("transient failure", exc, preset_id=str(preset.preset_id))

    async def creates_succeeded(self, preset: PresetRow) -> None:
        """A create went through: the run of transient failures is over."""
        try:
            async with self.db.transaction() as conn:
                await self._bound(conn)
                await store.clear_transient_failures(conn, preset.preset_id)
        except StoreTimeout as exc:  # cleared by the next successful create
            self._busy("transient failures cleared", exc, preset_id=str(preset.preset_id))

    @staticmethod
    def _busy(what: str, exc: StoreTimeout, **ids: object) -> None:
        """A write that waited too long for a lock (another replica's transaction, frozen?): skipped, not fatal."""
        log.warning("reconcile.record_lock_busy", what=what, error=str(exc), **ids)

    async def _bound(self, conn: Conn) -> None:
        """Row locks taken by these writes are waited for, and held while idle, for a bounded time (a frozen
        replica must not stall the others: see ``prebuilds.executor``)."""
        await store.bound_waits(conn, lock_wait=self.lock_wait, idle_timeout=self.idle_timeout)

    # -- events --------------------------------------------------------------------------------------------

    async def _insert_events(self, now: datetime, events: list[NewEvent]) -> None:
        if not events:
            return
        async with self.db.transaction() as conn:
            await store.insert_events(conn, now, events)

    async def prune_events(self, now: datetime) -> None:
        if self._last_prune is not None and now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        try:
            async with self.db.transaction() as conn:
                await self._bound(conn)
                await store.prune_events(conn, now - self.event_retention)
                await store.prune_demand(conn, now - DEMAND_RETENTION)
                await pool_history.prune(conn, now - self.pool_history_retention)
        except StoreTimeout as exc:
            self._last_prune = None  # try again next cycle
            self._busy("event pruning", exc)
