"""Routes: prebuild pools — status, settings (pause/resume), pool settings, invalidate, retry, cleanup, explain."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from prebuildd.api.auditing import audited
from prebuildd.api.context import Services
from prebuildd.api.deps import AuditDep, ServicesDep, UserDep, may, permission
from prebuildd.api.lookups import organization_of
from prebuildd.api.models import LongText, LookupText, ShortText
from prebuildd.domain.durations import parse_duration
from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.domain.permissions import Action
from prebuildd.domain.pools import MAX_INSTANCES
from prebuildd.domain.schedules import Schedule, overlap
from prebuildd.identity.users import User, require
from prebuildd.prebuilds import operations as prebuild_ops
from prebuildd.prebuilds.snapshot import SnapshotReader
from prebuildd.store.prebuilds import FailedPrebuild as FailedPrebuildRecord
from prebuildd.store.prebuilds import PresetPool, reconciliation_paused

router = APIRouter(tags=["prebuilds"])


def prebuild_operations(services: Services) -> prebuild_ops.PrebuildOperations:
    """The operator actions, with the collaborators they need (the snapshot reader is the reconciler's)."""
    return prebuild_ops.PrebuildOperations(
        db=services.db,
        clock=services.clock,
        builder=services.builder,
        reader=SnapshotReader.from_config(services.db, services.clock, services.config),
        kick=services.kick,
    )


async def _operations(services: ServicesDep) -> prebuild_ops.PrebuildOperations:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool (a thread hop per request)
    return prebuild_operations(services)


PrebuildOpsDep = Annotated[prebuild_ops.PrebuildOperations, Depends(_operations)]
PoolReader = Annotated[User, permission(Action.PREBUILDS_READ)]
PoolOperator = Annotated[User, permission(Action.PREBUILDS_OPERATE)]
PoolEditor = Annotated[User, permission(Action.TEMPLATE_WRITE)]


class PoolSettings(BaseModel):
    reconciliation_paused: bool


class StatusOut(BaseModel):
    paused: bool
    presets: list[prebuild_ops.PresetStatus]


class PresetRef(BaseModel):
    template: LookupText
    preset: LookupText | None = None


class ScheduleIn(BaseModel):
    cron: LookupText
    instances: int = Field(ge=0, le=MAX_INSTANCES)


class AutoscaleIn(BaseModel):
    """The keys to change; the others keep their value (or their default when autoscale was off)."""

    min: int | None = Field(default=None, ge=0, le=MAX_INSTANCES)
    max: int | None = Field(default=None, ge=1, le=MAX_INSTANCES)
    target_hit_rate: float | None = Field(default=None, gt=0, lt=1)
    stabilization: ShortText | None = Field(default=None, description="Duration such as 10m")
    lead_time: Literal["mean", "p90"] | None = None


class PoolUpdate(BaseModel):
    instances: int | None = Field(default=None, ge=0, le=MAX_INSTANCES)
    autoscale: AutoscaleIn | None = Field(default=None, description="Size the pool from demand; null: stop")
    expression: LongText | None = Field(
        default=None, description="A target expression (reference-compatible); empty or null: none"
    )
    ttl: ShortText | None = Field(default=None, description="Duration such as 8h; 0 for none")
    timezone: LookupText | None = None
    schedules: list[ScheduleIn] | None = Field(default=None, max_length=50)


class CleanupIn(BaseModel):
    template: LookupText | None = None
    preset: LookupText | None = None
    dry_run: bool = True


class FailedPrebuild(BaseModel):
    workspace_id: UUID
    workspace_name: str
    template: str
    preset: str | None
    error: str | None
    failure_class: str | None
    created_at: datetime
    completed_at: datetime | None

    @classmethod
    def from_record(cls, r: FailedPrebuildRecord) -> FailedPrebuild:
        return cls(
            workspace_id=r.workspace_id,
            workspace_name=r.workspace_name,
            template=r.template_name,
            preset=r.preset_name,
            error=r.error,
            failure_class=r.failure_class,
            created_at=r.build_created_at,
            completed_at=r.job_completed_at,
        )


class CleanupOut(BaseModel):
    dry_run: bool
    prebuilds: list[FailedPrebuild]
    errors: list[str]


class ExplainEvent(BaseModel):
    at: datetime
    kind: str
    message: str


class ClaimBuildsOut(BaseModel):
    """The preset's claim builds over the last day (builds with reason `claim` of its claimed prebuilds)."""

    total: int
    succeeded: int
    failed: int
    in_progress: int
    avg_seconds: float | None = Field(description="Mean time from the claim to the end of its claim build")
    max_seconds: float | None
    last_error: str | None


class ExplainOut(BaseModel):
    status: prebuild_ops.PresetStatus
    decisions: list[ExplainEvent]
    claim_builds: ClaimBuildsOut


def _pool_out(pool: PresetPool) -> dict[str, Any]:
    return {
        "preset": pool.name,
        "desired_instances": pool.desired_instances,
        "ttl_seconds": pool.ttl_seconds,
        "timezone": pool.timezone,
        "schedules": [{"cron": s.cron, "instances": s.instances} for s in pool.schedules],
        "autoscale": pool.autoscale,
        "expression": pool.target_expression,
        # Accepted, as at push, but the pool keeps its instances until the schedules no longer overlap.
        "warnings": [w for w in [overlap([s.cron for s in pool.schedules])] if w is not None],
    }


@router.get(
    "/prebuilds/status",
    response_model=StatusOut,
    summary="The organization's pools: targets, counts, status and why (error text: template-admins and owners)",
)
async def status(ops: PrebuildOpsDep, services: ServicesDep, user: PoolReader) -> StatusOut:
    paused, presets = await ops.pool_status(
        await organization_of(services, user), show_errors=may(user, Action.OUTPUTS_READ)
    )
    return StatusOut(paused=paused, presets=presets)


@router.get("/prebuilds/settings", response_model=PoolSettings)
async def get_settings(services: ServicesDep, user: UserDep) -> PoolSettings:
    async with services.db.transaction() as conn:
        paused = await reconciliation_paused(conn)
    return PoolSettings(reconciliation_paused=paused)


@router.put(
    "/prebuilds/settings",
    response_model=PoolSettings,
    summary="Pause or resume reconciliation of every organization (site owner)",
)
@audited("prebuilds.pause", "site")
async def put_settings(
    body: PoolSettings, ops: PrebuildOpsDep, user: UserDep, audit: AuditDep
) -> PoolSettings:
    # The permission is checked here, not by a dependency, so that a refused resume is recorded as a resume.
    audit.action = "prebuilds.pause" if body.reconciliation_paused else "prebuilds.resume"
    require(user, Action.RECONCILIATION_PAUSE)
    setting = await ops.set_paused(body.reconciliation_paused, user.id, audit=audit)
    return PoolSettings(reconciliation_paused=setting.reconciliation_paused)


@router.patch(
    "/templates/{template}/presets/{preset}", summary="Change a preset's pool without a new version"
)
@audited("preset.set", "preset", "preset")
async def update_pool(
    template: LookupText,
    preset: LookupText,
    body: PoolUpdate,
    ops: PrebuildOpsDep,
    services: ServicesDep,
    user: PoolEditor,
    audit: AuditDep,
) -> dict[str, Any]:
    audit.about("preset", f"{template}/{preset}")
    ttl = None
    if body.ttl is not None:
        try:
            ttl = round(parse_duration(body.ttl))
        except ValueError as exc:
            raise PrebuilddError(ErrorCode.INVALID_REQUEST, f"ttl: {exc}") from None
    schedules = (
        [Schedule(s.cron, s.instances) for s in body.schedules] if body.schedules is not None else None
    )
    autoscale: dict[str, Any] | None = None
    if body.autoscale is not None:
        autoscale = body.autoscale.model_dump(exclude_none=True, exclude={"stabilization"})
        if body.autoscale.stabilization is not None:
            try:
                autoscale["stabilization_seconds"] = round(parse_duration(body.autoscale.stabilization))
            except ValueError as exc:
                raise PrebuilddError(ErrorCode.INVALID_REQUEST, f"autoscale.stabilization: {exc}") from None
    pool = await ops.set_pool(
        await organization_of(services, user),
        template,
        preset,
        instances=body.instances,
        ttl_seconds=ttl,
        timezone=body.timezone,
        schedules=schedules,
        autoscale=autoscale,
        clear_autoscale="autoscale" in body.model_fields_set and body.autoscale is None,
        expression=body.expression or None,
        clear_expression="expression" in body.model_fields_set and not body.expression,
        audit=audit,
    )
    return _pool_out(pool)


@router.post("/prebuilds/invalidate", summary="Replace every prebuild of a template (or one preset)")
@audited("prebuilds.invalidate", "template")
async def invalidate(
    body: PresetRef, ops: PrebuildOpsDep, services: ServicesDep, user: PoolOperator, audit: AuditDep
) -> dict[str, Any]:
    names = await ops.invalidate(
        await organization_of(services, user), body.template, body.preset, audit=audit
    )
    return {"template": body.template, "presets": names}


@router.post("/prebuilds/retry", summary="Clear a hard limit or backoff: earlier failures stop counting")
@audited("prebuilds.retry", "template")
async def retry(
    body: PresetRef, ops: PrebuildOpsDep, services: ServicesDep, user: PoolOperator, audit: AuditDep
) -> dict[str, Any]:
    names = await ops.retry(await organization_of(services, user), body.template, body.preset, audit=audit)
    return {"template": body.template, "presets": names}


@router.post(
    "/prebuilds/cleanup", response_model=CleanupOut, summary="List (dry run) or delete failed prebuilds"
)
@audited("prebuilds.cleanup", "template")
async def cleanup(
    body: CleanupIn, ops: PrebuildOpsDep, services: ServicesDep, user: PoolOperator, audit: AuditDep
) -> CleanupOut:
    failed, errors = await ops.cleanup(
        await organization_of(services, user), body.template, body.preset, dry_run=body.dry_run, audit=audit
    )
    return CleanupOut(
        dry_run=body.dry_run, errors=errors, prebuilds=[FailedPrebuild.from_record(r) for r in failed]
    )


@router.get("/prebuilds/explain", response_model=ExplainOut, summary="Why a pool is the way it is")
async def explain(
    template: Annotated[LookupText, Query()],
    preset: Annotated[LookupText, Query()],
    ops: PrebuildOpsDep,
    services: ServicesDep,
    user: PoolReader,
) -> ExplainOut:
    show_errors = may(user, Action.OUTPUTS_READ)
    current, events = await ops.explain(
        await organization_of(services, user), template, preset, show_errors=show_errors
    )
    claim_builds = await ops.claim_builds(current.preset_id, show_errors=show_errors)
    return ExplainOut(
        status=current,
        decisions=[ExplainEvent(at=e.created_at, kind=e.kind, message=e.message) for e in events],
        claim_builds=ClaimBuildsOut(**dataclasses.asdict(claim_builds)),
    )
