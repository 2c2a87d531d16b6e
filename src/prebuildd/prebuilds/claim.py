"""Creating a workspace: claim a ready prebuild when one fits, otherwise build cold (SPEC §7).

A claim is one UPDATE inside the creation transaction: the workspace row moves to the user, and the reconciler
is kicked to build the replacement. The template's optional claim step (personalisation) then runs as a
high-priority build; without one, a claim starts no job at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from uuid import UUID

import psycopg
import structlog

from prebuildd.domain.errors import CONFLICT, NOT_FOUND, BuildError
from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.domain.jobs import BuildReason, JobPriority, Transition
from prebuildd.domain.manifest import TemplateManifest, parse_manifest
from prebuildd.domain.parameters import ParameterError, ParameterSpec, canonical_value
from prebuildd.services import Services
from prebuildd.store.db import Conn, Row, execute, fetch_one, jsonb
from prebuildd.workspaces.builder import BuildCreated, BuildRequest

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


def has_claim_step(manifest: TemplateManifest) -> bool:
    if manifest.exec is not None and manifest.exec.claim:
        return True
    return manifest.echo is not None and "claim" in manifest.echo.steps


def choose_preset(
    presets: list[Row], specs: list[ParameterSpec], explicit_preset: UUID | None, values: Mapping[str, object]
) -> tuple[Row | None, dict[str, str]]:
    """The pool preset a creation can claim from, and the explicit values that differ from it (mutable ones).

    An explicit preset wins; with parameters only, the preset whose values all equal the given ones, the one
    with most parameters first. A value that differs from the preset's for an immutable parameter means no claim:
    the prebuild was built with another value.
    """
    by_name = {s.name: s for s in specs}
    given: dict[str, str] = {}
    for name, raw in values.items():
        spec = by_name.get(name)
        if spec is None or raw is None:
            continue
        try:
            given[name] = canonical_value(spec, raw)
        except ParameterError:
            return None, {}  # the builder will refuse it with a clear message
    if explicit_preset is not None:
        candidates = [p for p in presets if p["id"] == explicit_preset]
    else:
        candidates = sorted(
            (
                p
                for p in presets
                if p["parameters"] and all(given.get(k) == v for k, v in p["parameters"].items())
            ),
            key=lambda p: -len(p["parameters"]),
        )
    for preset in candidates:
        differing = {k: v for k, v in given.items() if preset["parameters"].get(k, _default(by_name, k)) != v}
        if any(not by_name[k].mutable for k in differing):
            return None, {}
        return preset, differing
    return None, {}


def _default(specs: Mapping[str, ParameterSpec], name: str) -> str | None:
    spec = specs.get(name)
    return spec.default if spec else None


async def create_workspace(services: Services, req: CreateRequest) -> CreateResult:
    """Claim a prebuild when one fits, else build cold; records a claim or a claim-missed event either way.

    A claim of a preset with no parameters to compare takes two round trips: the context, then the claim.
    """
    started = time.perf_counter()
    async with services.db.autocommit() as conn:
        context = await fetch_one(
            conn,
            "claims.context",
            {
                "template_id": req.template_id,
                "owner_id": req.owner_id,
                "name": req.name,
            },
        )
        if context is None or context["deleted"]:
            raise BuildError(NOT_FOUND, f"template {req.template_id} not found")
        preset: Row | None = None
        differing: dict[str, str] = {}
        if context["presets"]:
            presets = [{**p, "id": UUID(p["id"])} for p in context["presets"]]
            specs: list[ParameterSpec] = []
            if req.parameters:  # values to compare with the presets': canonicalise them first
                specs = await services.builder.parameter_specs(conn, context["active_version_id"])
            preset, differing = choose_preset(presets, specs, req.preset_id, req.parameters or {})
    if preset is not None and not context["name_taken"]:
        claimed = await _try_claim(services, req, context, preset, differing, started)
        if claimed is not None:
            return claimed
    if preset is not None:
        await _event(
            services,
            "claim.missed",
            context,
            preset["id"],
            None,
            req.owner_id,
            f"no eligible prebuild of preset {preset['name']}: building cold",
        )
        services.metrics.claim_missed.labels(
            str(context["organization_id"]), context["name"], preset["name"]
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
    async with services.db.transaction() as conn:
        build = await services.builder.build(conn, build_req)
    return CreateResult(build.workspace_id, False, build, req.preset_id, time.perf_counter() - started)


async def _try_claim(
    services: Services,
    req: CreateRequest,
    template: Row,
    preset: Row,
    differing: dict[str, str],
    started: float,
) -> CreateResult | None:
    timeout = services.config.claim_timeout
    params = {
        "preset_id": preset["id"],
        "prebuilds_user_id": PREBUILDS_USER_ID,
        "owner_id": req.owner_id,
        "name": req.name,
        "now": services.clock.now(),
    }
    needs_build = bool(differing) or (
        bool(template["manifest"]) and has_claim_step(_manifest(template["manifest"]))
    )
    try:
        async with asyncio.timeout(timeout):
            build = None
            if not needs_build:
                # One statement: the claim, its event and the agent's notification commit together.
                async with services.db.autocommit() as conn:
                    row = await fetch_one(conn, "claims.claim", params)
            else:
                async with services.db.transaction() as conn:
                    row = await fetch_one(conn, "claims.claim", params)
                    if row is not None:
                        build = await services.builder.build(
                            conn,
                            BuildRequest(
                                transition=Transition.START,
                                initiator_id=req.initiator_id,
                                workspace_id=row["id"],
                                parameters=differing,
                                reason=BuildReason.CLAIM,
                                priority=JobPriority.HUMAN,
                            ),
                        )
            if row is None:
                return None
    except (TimeoutError, psycopg.errors.QueryCanceled):
        log.warning("claim.timed_out", preset_id=str(preset["id"]), timeout=timeout)
        return None
    except psycopg.errors.UniqueViolation:
        raise BuildError(CONFLICT, "a workspace with this name already exists for this owner") from None
    seconds = time.perf_counter() - started
    labels = (str(template["organization_id"]), template["name"], preset["name"])
    services.metrics.claimed.labels(*labels).inc()
    services.metrics.claim_duration.observe(seconds)
    services.kick("claim")
    log.info(
        "claim.succeeded", workspace_id=str(row["id"]), preset=preset["name"], ms=round(seconds * 1000, 2)
    )
    return CreateResult(row["id"], True, build, preset["id"], seconds)


async def _insert_event(
    conn: Conn,
    services: Services,
    kind: str,
    template: Row,
    preset_id: UUID,
    workspace_id: UUID | None,
    user_id: UUID,
    message: str,
) -> None:
    await execute(
        conn,
        "claims.insert_event",
        {
            "now": services.clock.now(),
            "kind": kind,
            "organization_id": template["organization_id"],
            "template_id": template["id"],
            "preset_id": preset_id,
            "workspace_id": workspace_id,
            "user_id": user_id,
            "message": message,
            "data": jsonb({}),
        },
    )


async def _event(
    services: Services,
    kind: str,
    template: Row,
    preset_id: UUID,
    workspace_id: UUID | None,
    user_id: UUID,
    message: str,
) -> None:
    async with services.db.transaction() as conn:
        await _insert_event(conn, services, kind, template, preset_id, workspace_id, user_id, message)
