"""The executor: runs one preset's planned cancels, deletes and creates through the builder (the one path that
creates builds). Each create is its own short transaction under the preset's lock, after a re-count, so replicas
that race never exceed a target; a refused create stops that preset's creates for the cycle (SPEC §6.2).

Every action transaction bounds its lock waits (``lock_wait``) and how long it may sit idle holding its locks
(``idle_timeout``): a replica frozen inside one (SIGSTOP) keeps its connection, and without the bounds the
preset lock or a workspace row lock it holds would stall every other replica's cycle at that preset. With them
the others skip the preset for one cycle and the server ends the frozen session, freeing its locks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

import structlog

from prebuildd.domain.errors import BuildError, PrebuilddError
from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.domain.jobs import BuildReason, JobPriority, Transition
from prebuildd.domain.planner import Plan
from prebuildd.domain.snapshot import PresetRow
from prebuildd.prebuilds.recorder import Recorder
from prebuildd.runtime.clock import Clock
from prebuildd.runtime.metrics import Metrics
from prebuildd.store import prebuilds as store
from prebuildd.store.db import Database, IsolationLevel
from prebuildd.store.errors import StoreTimeout
from prebuildd.workspaces.builder import BuildRequest, WorkspaceBuilder, prebuild_name

log = structlog.get_logger(__name__)


class JobCanceller(Protocol):
    async def cancel(self, job_id: UUID) -> str | None: ...


@dataclass
class Executed:
    """What one preset's actions did."""

    created: int = 0
    deleted: int = 0
    canceled: int = 0
    failures: list[str] = field(default_factory=list)


class Executor:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        builder: WorkspaceBuilder,
        queue: JobCanceller,
        metrics: Metrics,
        recorder: Recorder,
        *,
        concurrency: int,
        lock_wait: float = 5.0,
        idle_timeout: float = 10.0,
    ) -> None:
        self.db = db
        self.clock = clock
        self.builder = builder
        self.queue = queue
        self.metrics = metrics
        self.recorder = recorder
        self._concurrency = asyncio.Semaphore(concurrency)
        self.lock_wait = lock_wait
        """Longest wait for a preset or workspace lock held by another transaction (``lock_timeout``)."""
        self.idle_timeout = idle_timeout
        """Longest time an action's transaction may sit idle holding its locks before the server ends it."""

    async def execute(self, preset: PresetRow, plan: Plan) -> Executed:
        done = Executed()
        async with self._concurrency:
            for cancel in plan.cancels:
                status = await self.queue.cancel(cancel.job_id)
                if status == "canceled" and await self.delete(cancel.workspace_id, "inactive version"):
                    done.canceled += 1
            for delete in plan.deletes:
                if await self.delete(delete.workspace_id, delete.reason.value):
                    done.deleted += 1
            if plan.create:
                done.created = await self._create(preset, plan, done)
        return done

    async def delete(self, workspace_id: UUID, reason: str) -> bool:
        req = BuildRequest(
            transition=Transition.DELETE,
            initiator_id=PREBUILDS_USER_ID,
            workspace_id=workspace_id,
            reason=BuildReason.PREBUILD,
            priority=JobPriority.PREBUILD,
            expected_owner_id=PREBUILDS_USER_ID,
        )
        try:
            async with self.db.transaction() as conn:
                await store.bound_waits(conn, lock_wait=self.lock_wait, idle_timeout=self.idle_timeout)
                created = await self.builder.build(conn, req)
        except StoreTimeout as exc:
            log.warning(
                "prebuild.delete_lock_busy", workspace_id=str(workspace_id), reason=reason, error=str(exc)
            )
            return False
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

    async def _create(self, preset: PresetRow, plan: Plan, done: Executed) -> int:
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
            except StoreTimeout as exc:
                # Another transaction (a frozen replica's?) holds the preset lock: skip it for this cycle.
                log.warning("prebuild.create_lock_busy", preset_id=str(preset.preset_id), error=str(exc))
                break
            except BuildError as exc:
                done.failures.append(f"{preset.template_name}/{preset.preset_name}: {exc.message}")
                await self._creation_refused(preset, req, exc)
                break  # the remaining creates would fail the same way (SPEC §6.2)
            created += 1
        if created and preset.consecutive_failures:
            await self.recorder.creates_succeeded(preset)
        return created

    async def _create_one(self, preset: PresetRow, desired: int, req: BuildRequest) -> bool:
        """One create under the preset's lock, after re-counting: never above the target, whatever else runs."""
        async with self.db.transaction(isolation=IsolationLevel.READ_COMMITTED) as conn:
            await store.lock_preset(
                conn, preset.preset_id, lock_wait=self.lock_wait, idle_timeout=self.idle_timeout
            )
            counts = await store.count_pool(conn, preset, self.clock.now())
            if counts.running_valid + counts.starting >= desired:
                log.info(
                    "prebuild.create_skipped",
                    preset_id=str(preset.preset_id),
                    reason="target already met (re-counted under the preset lock)",
                    desired=desired,
                    running_valid=counts.running_valid,
                    starting=counts.starting,
                )
                return False
            created = await self.builder.build(conn, req)
        self.metrics.created.labels(*self.metrics.labels(preset)).inc()
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
            await self.recorder.transient_failure(preset, self.clock.now(), exc.message)
            return
        try:
            await self.builder.record_failed_build(self.db, req, exc)
        except PrebuilddError as record_exc:  # refused, or the store failed
            log.error(
                "prebuild.failed_record_not_written", preset_id=str(preset.preset_id), error=str(record_exc)
            )
