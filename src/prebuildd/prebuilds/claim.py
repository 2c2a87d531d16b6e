"""Creating a workspace: claim a ready prebuild when one fits, otherwise build cold (SPEC §7).

A claim is one UPDATE inside the creation transaction: the workspace row moves to the user, and the reconciler
is kicked to build the replacement. The template's optional claim step (personalisation) then runs as a
high-priority build; without one, a claim starts no job at all. The rules (which preset, whether a build is
needed) are pure, in ``domain.claims``; this module does the I/O around them with the collaborators it is given.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from uuid import UUID

import structlog

from prebuildd.domain.claims import PoolPreset, choose_preset, claim_needs_build
from prebuildd.domain.errors import CONFLICT, NOT_FOUND, BuildError
from prebuildd.domain.jobs import BuildReason, JobPriority, Transition
from prebuildd.domain.manifest import TemplateManifest, parse_manifest
from prebuildd.domain.parameters import ParameterSpec
from prebuildd.prebuilds.coalesce import ClaimCoalescer
from prebuildd.runtime.clock import Clock
from prebuildd.runtime.metrics import Metrics
from prebuildd.store.claims import ClaimContext, ClaimEvent, claim_context, claim_prebuild, insert_claim_event
from prebuildd.store.db import Database
from prebuildd.store.errors import StoreConflict, StoreTimeout
from prebuildd.workspaces.builder import BuildCreated, BuildRequest, WorkspaceBuilder

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CreateRequest:
    organization_id: UUID
    owner_id: UUID
    initiator_id: UUID
    template_id: UUID
    name: str
    preset_id: UUID | None = None
    parameters: Mapping[str, object] | None = None


@dataclass(frozen=True)
class CreateResult:
    workspace_id: UUID
    claimed: bool
    build: BuildCreated | None
    """The build started for the user: the cold build, the claim step, or None for a claim with no step."""
    preset_id: UUID | None
    seconds: float


@lru_cache(maxsize=256)
def _manifest(text: str) -> TemplateManifest:
    return parse_manifest(text)


@dataclass(frozen=True)
class WorkspaceCreator:
    """Creates workspaces for users, by claim or cold build. Built from the process's parts by the caller."""

    db: Database
    clock: Clock
    builder: WorkspaceBuilder
    metrics: Metrics
    kick: Callable[[str], None]
    """Wakes the reconciler (with a reason) so that it builds a claimed prebuild's replacement now."""
    claim_timeout: float
    """Seconds a claim may take before the creation falls back to a cold build."""
    coalescer: ClaimCoalescer | None = None
    """The process's shared claim line (concurrent claims of a preset in one statement); None: each alone."""

    async def create_workspace(self, req: CreateRequest) -> CreateResult:
        """Claim a prebuild when one fits, else build cold; records a claim or a claim-missed event either way.

        A claim of a preset with no parameters to compare takes two round trips: the context, then the claim.
        """
        started = time.perf_counter()
        async with self.db.autocommit() as conn:
            context = await claim_context(
                conn, template_id=req.template_id, owner_id=req.owner_id, name=req.name
            )
            if context is None or context.deleted:
                raise BuildError(NOT_FOUND, f"template {req.template_id} not found")
            preset: PoolPreset | None = None
            differing: dict[str, str] = {}
            if context.presets:
                specs: list[ParameterSpec] = []
                if req.parameters and context.active_version_id is not None:
                    # values to compare with the presets': canonicalise them first
                    specs = await self.builder.parameter_specs(conn, context.active_version_id)
                preset, differing = choose_preset(context.presets, specs, req.preset_id, req.parameters or {})
        if preset is not None and not context.name_taken:
            claimed = await self._try_claim(req, context, preset, differing, started)
            if claimed is not None:
                return claimed
        if preset is not None:
            await self._event(
                ClaimEvent(
                    kind="claim.missed",
                    organization_id=context.organization_id,
                    template_id=context.template_id,
                    preset_id=preset.id,
                    workspace_id=None,
                    user_id=req.owner_id,
                    message=f"no eligible prebuild of preset {preset.name}: building cold",
                )
            )
            self.metrics.claim_missed.labels(
                context.organization_name, context.template_name, preset.name
            ).inc()
        build_req = BuildRequest(
            transition=Transition.START,
            initiator_id=req.initiator_id,
            owner_id=req.owner_id,
            organization_id=req.organization_id,
            template_id=req.template_id,
            name=req.name,
            preset_id=req.preset_id,
            parameters=req.parameters or {},
            priority=JobPriority.HUMAN,
        )
        async with self.db.transaction() as conn:
            build = await self.builder.build(conn, build_req)
        return CreateResult(build.workspace_id, False, build, req.preset_id, time.perf_counter() - started)

    async def _try_claim(
        self,
        req: CreateRequest,
        context: ClaimContext,
        preset: PoolPreset,
        differing: dict[str, str],
        started: float,
    ) -> CreateResult | None:
        timeout = self.claim_timeout
        now = self.clock.now()
        manifest = _manifest(context.manifest) if context.manifest else None
        try:
            build = None
            if not claim_needs_build(differing, manifest) and self.coalescer is not None:
                # One statement, maybe shared with concurrent claims of the preset; bounded by the timeout.
                workspace_id = await self.coalescer.claim(
                    preset_id=preset.id,
                    owner_id=req.owner_id,
                    name=req.name,
                    timeout=timeout,
                    started=started,
                )
            else:
                async with asyncio.timeout(timeout):
                    if not claim_needs_build(differing, manifest):
                        # One statement: the claim, its event and the agent's notification commit together.
                        async with self.db.autocommit() as conn:
                            workspace_id = await claim_prebuild(
                                conn,
                                preset_id=preset.id,
                                owner_id=req.owner_id,
                                name=req.name,
                                now=now,
                                waited_ms=(time.perf_counter() - started) * 1000,
                            )
                    else:
                        async with self.db.transaction() as conn:
                            workspace_id = await claim_prebuild(
                                conn,
                                preset_id=preset.id,
                                owner_id=req.owner_id,
                                name=req.name,
                                now=now,
                                waited_ms=(time.perf_counter() - started) * 1000,
                            )
                            if workspace_id is not None:
                                build = await self.builder.build(
                                    conn,
                                    BuildRequest(
                                        transition=Transition.START,
                                        initiator_id=req.initiator_id,
                                        workspace_id=workspace_id,
                                        parameters=differing,
                                        reason=BuildReason.CLAIM,
                                        priority=JobPriority.HUMAN,
                                    ),
                                )
                                await insert_claim_event(
                                    conn, claim_build_event(req, context, preset, build, differing), now
                                )
            if workspace_id is None:
                return None
        except (TimeoutError, StoreTimeout):
            log.warning("claim.timed_out", preset_id=str(preset.id), timeout=timeout)
            return None
        except StoreConflict:
            raise BuildError(CONFLICT, "a workspace with this name already exists for this owner") from None
        seconds = time.perf_counter() - started
        labels = (context.organization_name, context.template_name, preset.name)
        self.metrics.claimed.labels(*labels).inc()
        if build is not None:
            self.metrics.claim_builds.labels(*labels).inc()
        self.metrics.claim_duration.observe(seconds)
        self.kick("claim")
        log.info(
            "claim.succeeded", workspace_id=str(workspace_id), preset=preset.name, ms=round(seconds * 1000, 2)
        )
        return CreateResult(workspace_id, True, build, preset.id, seconds)

    async def _event(self, event: ClaimEvent) -> None:
        async with self.db.transaction() as conn:
            await insert_claim_event(conn, event, self.clock.now())


def claim_build_event(
    req: CreateRequest,
    context: ClaimContext,
    preset: PoolPreset,
    build: BuildCreated,
    differing: Mapping[str, str],
) -> ClaimEvent:
    """The ``claim.build`` event: which build personalises the claimed prebuild, and why it runs."""
    why = (
        "values given at claim: " + ", ".join(f"{k}={v}" for k, v in sorted(differing.items()))
        if differing
        else "the template's claim step"
    )
    return ClaimEvent(
        kind="claim.build",
        organization_id=context.organization_id,
        template_id=context.template_id,
        preset_id=preset.id,
        workspace_id=build.workspace_id,
        user_id=req.owner_id,
        message=f"claim build #{build.build_number} of {req.name} queued ({why})",
        data={"build_number": build.build_number, "job_id": str(build.job_id), "parameters": dict(differing)},
    )
