"""The reconcile loop: take the cycle lease, read one global snapshot, plan (pure), execute, record (SPEC §5).

This module is the loop only (lease, cadence, kicks, outages); its collaborators are the snapshot reader
(``prebuilds.snapshot``), the executor (``prebuilds.executor``) and the recorder (``prebuilds.recorder``).

Locking: one replica runs a cycle at a time under a lease (a row of ``reconcile_leases``: holder, expiry), taken
at the start of a cycle on a dedicated autocommit connection, renewed every third of its duration while the
cycle runs, and given back at its end. It replaced a session advisory lock, which a frozen (SIGSTOP'd) or
half-open replica kept for as long as its connection lived: a lease expires, so such a holder stops
reconciliation for at most ``lease_duration + lease_retry``; a lease whose holder's connection is gone (a killed
replica) is free at once. A replica that finds the lease held tries again after ``lease_retry``, not a whole
interval later. The lease connection is never inside a transaction, so nothing sits "idle in transaction" while
actions run; the snapshot has its own short read-only REPEATABLE READ transaction, and each action its own short
write transaction with bounded lock waits. The lease only avoids duplicate work: what guarantees the invariant is
the per-preset transaction lock plus re-count taken by every create, so replicas that race (or a holder that
resumes after losing its lease) still never exceed a target. docs/reconciler.md gives the bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from prebuildd.domain.plancache import PlanCache
from prebuildd.domain.planner import Plan, pace
from prebuildd.domain.snapshot import PresetRow
from prebuildd.prebuilds.executor import Executed, Executor, JobCanceller
from prebuildd.prebuilds.recorder import Recorder
from prebuildd.prebuilds.snapshot import Snapshot, SnapshotReader, failure_policy
from prebuildd.runtime.clock import Clock
from prebuildd.runtime.config import ServerConfig
from prebuildd.runtime.faults import FaultState
from prebuildd.runtime.metrics import Metrics
from prebuildd.runtime.notify import WebhookNotifier
from prebuildd.store import channels
from prebuildd.store import prebuilds as store
from prebuildd.store.db import Conn, Database
from prebuildd.store.errors import StoreError, StoreTimeout, StoreUnavailable
from prebuildd.store.listener import Listener
from prebuildd.store.prebuilds import Lease
from prebuildd.workspaces.builder import WorkspaceBuilder

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class LoopSettings:
    """The configuration values the loop reads."""

    interval: float
    max_inflight: int
    concurrency: int
    event_retention: timedelta
    pool_history_retention: timedelta = timedelta(days=7)
    """How long pool-size samples are kept (``--pool-history-retention``)."""
    use_cycle_lock: bool = True
    debounce: float = 0.1
    """Kicks within this window make one cycle."""
    lease_duration: float = 15.0
    """How long the cycle lease lasts without a renewal (``--reconcile-lease``)."""
    lease_renew_every: float | None = None
    """How often a holder renews the lease during a cycle (None: a third of the lease)."""
    retry_initial: float = 1.0
    """First wait after a cycle failed because the database is away; doubles up to ``retry_max``."""
    retry_max: float = 10.0
    lock_wait: float = 5.0
    """Longest wait of an action for a preset or workspace lock (see ``prebuilds.executor``)."""
    idle_timeout: float = 10.0
    """Longest time an action's transaction may sit idle holding locks before the server ends its session."""

    @property
    def lease_renew(self) -> float:
        """How often a holder renews the lease during a cycle."""
        return self.lease_renew_every if self.lease_renew_every is not None else self.lease_duration / 3

    @property
    def lease_retry(self) -> float:
        """The wait of a replica that found the lease held by another (a third of the lease, at most the
        interval): a takeover happens at most this long after the lease expired."""
        return min(self.lease_duration / 3, self.interval)

    @classmethod
    def from_config(
        cls, config: ServerConfig, db: Database, *, use_cycle_lock: bool = True, debounce: float = 0.1
    ) -> LoopSettings:
        return cls(
            interval=config.reconcile_interval,
            max_inflight=config.max_inflight_prebuild_jobs,
            concurrency=config.reconcile_concurrency or max(1, min(5, db.pool.max_size // 2)),
            event_retention=timedelta(seconds=config.event_retention),
            pool_history_retention=timedelta(seconds=config.pool_history_retention),
            use_cycle_lock=use_cycle_lock,
            debounce=debounce,
            lease_duration=config.reconcile_lease,
        )


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
    """Statements of the snapshot read."""
    sampled: int = 0
    """Pool-size samples written (one statement for all of them; none when no pool changed)."""

    def add(self, done: Executed) -> None:
        self.created += done.created
        self.deleted += done.deleted
        self.canceled += done.canceled
        self.failures += done.failures


def _holder_name() -> str:
    """This reconciler's name in the lease table: host and process (for operators), plus a per-instance token
    (a restarted process, or a second reconciler in one process, is another holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Reconciler:
    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        reader: SnapshotReader,
        executor: Executor,
        recorder: Recorder,
        metrics: Metrics,
        settings: LoopSettings,
        listener: Listener | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.reader = reader
        self.executor = executor
        self.recorder = recorder
        self.metrics = metrics
        self.settings = settings
        self.listener = listener
        self.holder = _holder_name()
        self.faults = FaultState("reconciler", on_change=metrics.component_changed)
        self._kicked = asyncio.Event()
        self._lock_conn: Conn | None = None
        self._lease_lost = False
        self.last_result: CycleResult | None = None
        self.last_attempt_at: datetime | None = None
        """Clock time of the last cycle attempt, including one that found the lease held by another replica
        (read by /readyz: a replica that loses the lease to a live one is healthy)."""
        self.last_success_at: datetime | None = None
        """Clock time of the last cycle this replica completed."""
        self.lease: Lease | None = None
        """The lease as the last attempt to take or renew it saw it."""
        self.holds_lock = False
        self.cycles = 0
        self._plans = PlanCache()
        """Plans of pools at rest, reused while their snapshot is the previous cycle's (``domain.plancache``)."""

    @classmethod
    def build(
        cls,
        *,
        config: ServerConfig,
        db: Database,
        clock: Clock,
        builder: WorkspaceBuilder,
        queue: JobCanceller,
        metrics: Metrics,
        listener: Listener | None = None,
        use_cycle_lock: bool = True,
    ) -> Reconciler:
        """The reconciler and its collaborators, from the server's configuration."""
        settings = LoopSettings.from_config(config, db, use_cycle_lock=use_cycle_lock)
        policy = failure_policy(config)
        url = config.notify_webhook
        recorder = Recorder(
            db,
            policy=policy,
            event_retention=settings.event_retention,
            pool_history_retention=settings.pool_history_retention,
            notifier=WebhookNotifier(url) if url else None,
            lock_wait=settings.lock_wait,
            idle_timeout=settings.idle_timeout,
        )
        executor = Executor(
            db,
            clock,
            builder,
            queue,
            metrics,
            recorder,
            concurrency=settings.concurrency,
            lock_wait=settings.lock_wait,
            idle_timeout=settings.idle_timeout,
        )
        return cls(
            db=db,
            clock=clock,
            reader=SnapshotReader(db, clock, policy, idle_timeout=settings.idle_timeout),
            executor=executor,
            recorder=recorder,
            metrics=metrics,
            settings=settings,
            listener=listener,
        )

    # -- triggers ------------------------------------------------------------------------------------------

    def kick(self, reason: str = "") -> None:
        """Run a cycle soon (coalesced with other kicks within the debounce window)."""
        log.debug("reconcile.kicked", reason=reason)
        self._kicked.set()

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == channels.JOB_COMPLETED:
            self.kick("job completed")

    async def run(self) -> None:
        """The loop: a cycle every interval, or sooner when kicked; sooner too after finding the lease held
        (``lease_retry``) and after a database outage (a short capped backoff), never dying of one bad cycle."""
        if self.listener is not None:
            self.listener.add_handler(self._on_notify)
        backoff = self.settings.retry_initial
        try:
            while True:
                self._kicked.clear()
                wait = await self._attempt(backoff)
                if self.faults.down:
                    backoff = min(backoff * 2, self.settings.retry_max)
                else:
                    backoff = self.settings.retry_initial
                if await self._wait(wait):
                    await asyncio.sleep(self.settings.debounce)  # let a burst of kicks make one cycle
        finally:
            await self._drop_lock_conn()

    async def _attempt(self, backoff: float) -> float:
        """One cycle attempt; returns how long to wait before the next one."""
        try:
            result = await self.run_cycle()
        except (StoreUnavailable, StoreTimeout, OSError) as exc:
            # The database is away (or not answering): one line when it goes, one when it is back.
            self.faults.failed(exc)
            self._set_holder(False)
            await self._drop_lock_conn()
            return backoff
        except Exception as exc:
            # A bug or an unexpected database error: said at once, with the traceback; the loop goes on.
            log.exception("reconcile.cycle_crashed", error=str(exc) or type(exc).__name__)
            self._set_holder(False)
            await self._drop_lock_conn()
            return self.settings.interval
        self.faults.recovered()
        if result is None:  # another live replica holds the lease: try again soon, not a whole interval later
            return self.settings.lease_retry
        return self.settings.interval

    async def _wait(self, seconds: float) -> bool:
        """Wait ``seconds`` or until kicked; True when kicked."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that arrives as the
        # event is set (a kick during shutdown), and the loop would then outlive the server's stop.
        try:
            async with asyncio.timeout(seconds):
                await self._kicked.wait()
        except TimeoutError:
            return False
        return True

    # -- one cycle -----------------------------------------------------------------------------------------

    async def run_cycle(self) -> CycleResult | None:
        """One cycle; None when another live replica holds the lease (that still counts as an attempt)."""
        self.last_attempt_at = self.clock.now()
        started = time.perf_counter()
        use_lock = self.settings.use_cycle_lock
        if use_lock:
            lease = await self._take_lease()
            if not lease.held:
                self._set_holder(False)
                log.debug(
                    "reconcile.skipped",
                    reason="another replica holds the cycle lease",
                    holder=lease.holder,
                    expires_at=lease.expires_at.isoformat() if lease.expires_at else None,
                )
                return None
        self._lease_lost = False
        self._set_holder(True)
        cycle_over = asyncio.Event()
        renewer = asyncio.create_task(self._keep_lease(cycle_over)) if use_lock else None
        # A cycle allocates tens of thousands of short-lived, acyclic objects: collecting during it only
        # rescans the long-lived heap (measured: a third of a no-op cycle at 1,000 presets). Collect after.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            snap = await self.reader.read()
            planner = self._plans
            plans = [planner.plan(s, snap.taken_at, paused=snap.paused) for s in snap.snapshots]
            planner.retain(snap.presets)
            plans = pace(plans, snap.inflight, self.settings.max_inflight)
            result = CycleResult(snap, plans, queries=snap.queries)
            await self.recorder.record_status(snap)
            if not snap.paused:
                executed = await asyncio.gather(
                    *(self._execute(snap.presets[p.preset_id], p) for p in plans if p.actions),
                    return_exceptions=True,  # let every preset's actions end before the lease is given back
                )
                for done in executed:
                    if isinstance(done, BaseException):
                        raise done
                    result.add(done)
            await self.recorder.record_decisions(snap, plans)
            result.sampled = await self.recorder.record_pool_sizes(snap, plans)
            await self.recorder.record_autoscale(snap)
            await self.recorder.prune_events(snap.taken_at)
        finally:
            if gc_was_enabled:
                gc.enable()
            if renewer is not None:
                cycle_over.set()  # not cancel(): a renewal is never cut off mid-statement on the lease connection
                await asyncio.gather(renewer, return_exceptions=True)
            if use_lock:
                await self._release_lease()
        result.duration = time.perf_counter() - started
        self.last_result = result
        self._observe(result)
        self.cycles += 1
        self.last_success_at = self.clock.now()
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

    async def _execute(self, preset: PresetRow, plan: Plan) -> Executed:
        """A preset's actions, unless the lease was lost meanwhile: another replica is reconciling from a newer
        snapshot. (Skipping is only economy: the preset lock and re-count keep the invariant regardless.)"""
        if self._lease_lost:
            return Executed()
        return await self.executor.execute(preset, plan)

    def _observe(self, result: CycleResult) -> None:
        snap, metrics = result.snapshot, self.metrics
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
        metrics.observe_sizing(snap.presets, snap.targets, snap.demand, snap.taken_at)
        metrics.queue_depth.set(snap.queue_depth)
        age = (snap.taken_at - snap.oldest_pending).total_seconds() if snap.oldest_pending else 0
        metrics.oldest_pending.set(max(age, 0))

    def _set_holder(self, holds: bool) -> None:
        self.holds_lock = holds
        self.metrics.lock_holder.set(1 if holds else 0)

    # -- the cycle lease -----------------------------------------------------------------------------------

    async def _take_lease(self) -> Lease:
        """Take (or renew) the lease on this reconciler's dedicated autocommit connection: the lease names that
        connection's backend, so that the lease of a replica whose connection is gone is free at once."""
        if self._lock_conn is None or self._lock_conn.closed:
            self._lock_conn = await self.db.connect()
        now = self.clock.now()
        expires = now + timedelta(seconds=self.settings.lease_duration)
        try:
            # A half-open connection would wait for TCP to give up (minutes): not longer than a third of the lease.
            async with asyncio.timeout(self.settings.lease_duration / 3):
                lease = await store.take_lease(self._lock_conn, self.holder, now, expires)
        except TimeoutError as exc:
            await self._drop_lock_conn()
            raise StoreUnavailable(exc) from exc
        self.lease = lease
        return lease

    async def _keep_lease(self, cycle_over: asyncio.Event) -> None:
        """Renew the lease while a cycle runs; stop when another replica took it over (this one was frozen or cut
        off for longer than the lease)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.lease_renew):
                    await cycle_over.wait()
            if cycle_over.is_set():
                return
            try:
                lease = await self._take_lease()
            except (StoreError, OSError) as exc:
                log.info("reconcile.lease_renew_failed", holder=self.holder, error=str(exc))
                continue
            if not lease.held:
                self._lost_lease(lease.holder)
                return

    def _lost_lease(self, taken_by: str | None) -> None:
        if self._lease_lost:
            return
        self._lease_lost = True
        self._set_holder(False)
        log.warning(
            "reconcile.lease_lost",
            holder=self.holder,
            taken_by=taken_by,
            reason="this replica did not renew the cycle lease in time (frozen or cut off); another took it over",
        )

    async def _release_lease(self) -> None:
        if self._lock_conn is None or self._lock_conn.closed:
            return
        try:
            async with asyncio.timeout(self.settings.lease_duration / 3):
                released = await store.release_lease(self._lock_conn, self.holder)
        except (StoreError, OSError, TimeoutError):
            # Not given back: it is free once this connection is gone, and expires anyway.
            await self._drop_lock_conn()
            return
        if not released:
            self._lost_lease(None)

    async def _drop_lock_conn(self) -> None:
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                await self._lock_conn.close()
            self._lock_conn = None
