"""Routes: the job queue as operators see it (with why a pending job waits), cancelling a job, and the global
settings (the reconciliation pause switch)."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Query

from prebuildd.api.auditing import audited
from prebuildd.api.deps import AuditDep, ServicesDep, UserDep, may, permission
from prebuildd.api.lookups import organization_of
from prebuildd.api.models import JobOut, Settings
from prebuildd.api.routes.prebuilds import PrebuildOpsDep
from prebuildd.domain.errors import ErrorCode, PrebuilddError, not_found
from prebuildd.domain.jobs import waiting_reason
from prebuildd.domain.permissions import Action
from prebuildd.identity.users import User, require
from prebuildd.provisioner.registry import offered_capabilities
from prebuildd.queue.reads import job_detail, list_jobs
from prebuildd.store import prebuilds as prebuilds_store
from prebuildd.store.jobs import JobDetail

router = APIRouter(tags=["jobs"])

JobStatusFilter = Literal["pending", "running", "succeeded", "canceling", "canceled", "failed"]


@router.get("/jobs", response_model=list[JobOut], summary="Provisioner jobs, newest first")
async def jobs(
    services: ServicesDep,
    user: Annotated[User, permission(Action.JOBS_READ)],
    status: Annotated[JobStatusFilter | None, Query(description="Only jobs with this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JobOut]:
    organization_id = await organization_of(services, user)
    found = await list_jobs(
        services.db,
        offered_capabilities(services.config),
        organization_id=organization_id,
        status=status,
        limit=limit,
    )
    return [JobOut.from_job(job, reason) for job, reason in found]


async def _visible_job(services: ServicesDep, user: UserDep, job_id: UUID) -> JobDetail:
    """The job, when ``user`` may see it: template admins of its organization, or whoever started it."""
    job = await job_detail(services.db, job_id)
    if (
        job is None
        or job.organization_id != await organization_of(services, user)
        or not (may(user, Action.JOBS_MANAGE) or job.initiator_id == user.id)
    ):
        raise not_found(f"job {job_id}")
    return job


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    summary="One job, with why it waits when no daemon can take it (template admins, or whoever started it)",
)
async def job(job_id: UUID, services: ServicesDep, user: UserDep) -> JobOut:
    found = await _visible_job(services, user, job_id)
    return JobOut.from_job(found, waiting_reason(found, offered_capabilities(services.config)))


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a job: a pending one never starts, a running one is stopped by its daemon",
    responses={409: {"description": "The job has already finished."}},
)
async def cancel(job_id: UUID, services: ServicesDep, user: UserDep) -> JobOut:
    job = await _visible_job(services, user, job_id)
    if await services.queue.cancel(job_id) is None:
        raise PrebuilddError(ErrorCode.CONFLICT, f"job {job_id} has already finished ({job.job_status})")
    after = await job_detail(services.db, job_id)
    if after is None:  # a job is never deleted; only a database reset between the two reads gets here
        raise not_found(f"job {job_id}")
    return JobOut.from_job(after, waiting_reason(after, offered_capabilities(services.config)))


@router.get("/settings", response_model=Settings, summary="Global settings")
async def get_settings(services: ServicesDep, user: UserDep) -> Settings:
    async with services.db.transaction() as conn:
        paused = await prebuilds_store.reconciliation_paused(conn)
    return Settings(reconciliation_paused=paused)


@router.put(
    "/settings",
    response_model=Settings,
    summary="Pause or resume reconciliation of every organization (site owner)",
)
@audited("prebuilds.pause", "site")
async def put_settings(body: Settings, ops: PrebuildOpsDep, user: UserDep, audit: AuditDep) -> Settings:
    # The permission is checked here, not by a dependency, so that a refused resume is recorded as a resume.
    audit.action = "prebuilds.pause" if body.reconciliation_paused else "prebuilds.resume"
    require(user, Action.RECONCILIATION_PAUSE)
    setting = await ops.set_paused(body.reconciliation_paused, user.id, audit=audit)
    return Settings(reconciliation_paused=setting.reconciliation_paused)
