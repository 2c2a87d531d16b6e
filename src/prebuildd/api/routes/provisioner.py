"""Routes: provisioner keys (owner) and the endpoints standalone provisioner daemons call with such a key.

The daemon endpoints are the ``JobQueue`` of ``queue/port.py`` over HTTP: register, acquire (a long poll),
heartbeat, logs, complete. They accept only a provisioner key, and a key is accepted nowhere else. The server scopes the
daemon's worker id to its key, so a key can only heartbeat, log to and complete jobs it acquired itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Annotated, Any
from uuid import UUID

import structlog
from fastapi import APIRouter, Query, Request, Response

from prebuildd.api.auditing import audited
from prebuildd.api.context import Services
from prebuildd.api.deps import AuditDep, ProvisionerKeyDep, ServicesDep, permission
from prebuildd.api.provisioner_models import (
    MAX_WAIT_SECONDS,
    AcquiredJobOut,
    AcquireIn,
    CompleteIn,
    CompleteOut,
    CreatedProvisionerKey,
    HeartbeatOut,
    LogsIn,
    ProvisionerKeyIn,
    ProvisionerKeyOut,
    RegisterIn,
    RegisterOut,
    WorkerIn,
    acquired_job_out,
    job_outcome,
    log_lines,
)
from prebuildd.domain.errors import ErrorCode, PrebuilddError, not_found
from prebuildd.domain.permissions import Action
from prebuildd.identity import auth
from prebuildd.identity.auth import ProvisionerKey
from prebuildd.identity.users import User, organization_of, require
from prebuildd.queue.reads import job_organization

log = structlog.get_logger(__name__)

router = APIRouter(tags=["provisioner"])

KeysManager = Annotated[User, permission(Action.KEYS_MANAGE)]

_NO_JOB: dict[int | str, dict[str, Any]] = {204: {"description": "No job came within `wait_seconds`."}}


# -- provisioner keys --------------------------------------------------------------------------------------


def _key_out(key: ProvisionerKey) -> ProvisionerKeyOut:
    return ProvisionerKeyOut(
        id=key.id,
        organization_id=key.organization_id,
        name=key.name,
        tags=dict(key.tags),
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )


SiteWideQuery = Annotated[
    bool, Query(description="The site-wide keys (site owner), which serve every organization, instead")
]


async def _key_scope(services: Services, user: User, site_wide: bool) -> UUID | None:
    """The organization whose keys are meant (None: the site-wide keys, for the site owner only)."""
    if site_wide:
        require(user, Action.KEYS_SITE_WIDE)
        return None
    return await organization_of(services.db, user)


@router.get("/provisioner-keys", response_model=list[ProvisionerKeyOut], summary="Provisioner keys")
async def list_keys(
    services: ServicesDep, user: KeysManager, include_revoked: bool = False, site_wide: SiteWideQuery = False
) -> list[ProvisionerKeyOut]:
    organization_id = await _key_scope(services, user, site_wide)
    keys = await auth.provisioner_keys(services.db, organization_id, include_revoked=include_revoked)
    return [_key_out(key) for key in keys]


@router.post(
    "/provisioner-keys",
    response_model=CreatedProvisionerKey,
    status_code=201,
    summary="Create a provisioner key of the organization (site_wide: of none, site owner); the secret is returned once",
    responses={409: {"description": "A key of this name exists (revoke it first or choose another name)."}},
)
@audited("key.create", "provisioner_key")
async def create_key(
    services: ServicesDep, user: KeysManager, audit: AuditDep, body: ProvisionerKeyIn
) -> CreatedProvisionerKey:
    organization_id = await _key_scope(services, user, body.site_wide)
    created, secret = await auth.create_provisioner_key(
        services.db,
        services.clock,
        organization_id=organization_id,
        name=body.name,
        tags=body.tags,
        audit=audit,
    )
    log.info(
        "provisioner_key.created",
        key_id=str(created.id),
        name=body.name,
        organization_id=str(organization_id) if organization_id else "site-wide",
        by=user.username,
    )
    return CreatedProvisionerKey(key=_key_out(created), secret=secret)


@router.delete(
    "/provisioner-keys/{key}",
    status_code=204,
    summary="Revoke a provisioner key (by name or id); its daemons are refused from their next request",
)
@audited("key.revoke", "provisioner_key", "key")
async def revoke_key(
    services: ServicesDep, user: KeysManager, audit: AuditDep, key: str, site_wide: SiteWideQuery = False
) -> Response:
    organization_id = await _key_scope(services, user, site_wide)
    key_id = await auth.revoke_provisioner_key(services.db, services.clock, organization_id, key, audit=audit)
    log.info("provisioner_key.revoked", key_id=str(key_id), by=user.username)
    return Response(status_code=204)


# -- daemon endpoints --------------------------------------------------------------------------------------


def _worker(key: ProvisionerKey, worker_id: str) -> str:
    """The worker id as stored on jobs: the daemon's own id, bound to its key."""
    return f"{worker_id}@key:{key.id}"


def _format_tags(tags: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(tags.items())) or "none"


def _check_tags(key: ProvisionerKey, offered: Mapping[str, str]) -> None:
    allowed: Mapping[str, str] = key.tags
    refused = {k: v for k, v in offered.items() if allowed.get(k) != v}
    if refused:
        raise PrebuilddError(
            ErrorCode.INVALID_REQUEST,
            f"tags: provisioner key {key.name!r} does not allow {_format_tags(refused)} "
            f"(a daemon may offer only the key's tags: {_format_tags(allowed)})",
            [{"field": "tags", "problem": f"not allowed by the key: {_format_tags(refused)}"}],
        )


async def _key_active(services: Services, key: ProvisionerKey) -> bool:
    return await auth.provisioner_key_active(services.db, key.id)


async def _job_organization(services: Services, job_id: UUID) -> UUID | None:
    return await job_organization(services.db, job_id)


async def _check_job(services: Services, key: ProvisionerKey, job_id: UUID) -> None:
    if key.organization_id is not None and await _job_organization(services, job_id) != key.organization_id:
        raise not_found(f"job {job_id}")


@router.post(
    "/provisioner/daemon/register",
    response_model=RegisterOut,
    summary="A daemon (re)starts: fail at once the jobs earlier runs of its identity still hold",
)
async def register(services: ServicesDep, key: ProvisionerKeyDep, body: RegisterIn) -> RegisterOut:
    if not body.worker_id.startswith(body.identity + "#"):
        raise PrebuilddError(
            ErrorCode.INVALID_REQUEST,
            "worker_id: must be the identity, '#', then the run (e.g. builder-1#3f2a9c1e)",
            [{"field": "worker_id", "problem": f"does not start with {body.identity + '#'!r}"}],
        )
    # Only jobs bound to this key (hence its organization) can be an earlier run of this daemon. The failures
    # notify job completion, which kicks the reconciler of every replica.
    failed = await services.queue.fail_earlier_runs(
        body.identity,
        _worker(key, body.worker_id),
        key_suffix=_worker(key, ""),
        organization_id=key.organization_id,
    )
    log.info("provisioner.daemon_registered", worker_id=_worker(key, body.worker_id), failed_jobs=len(failed))
    return RegisterOut(failed_jobs=failed)


@router.post(
    "/provisioner/daemon/acquire",
    response_model=AcquiredJobOut,
    responses=_NO_JOB,
    summary="Take the next job this daemon can run, waiting up to wait_seconds for one",
)
async def acquire(
    request: Request, services: ServicesDep, key: ProvisionerKeyDep, body: AcquireIn
) -> AcquiredJobOut | Response:
    _check_tags(key, body.tags)
    worker = _worker(key, body.worker_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(body.wait_seconds, MAX_WAIT_SECONDS)
    poll = max(services.config.job_poll_interval, 0.05)
    first = True
    while True:
        if not first:
            if await request.is_disconnected():  # the daemon went away: take nothing for it
                return Response(status_code=204)
            if not await _key_active(services, key):
                raise PrebuilddError(ErrorCode.UNAUTHENTICATED, "invalid or revoked provisioner key")
        first = False
        # The key's organization filters in the acquire statement: no other organization's job is taken, so
        # nothing (agent tokens, a started_at) is ever done for one. A site-wide key takes any.
        job = await services.queue.acquire(worker, body.kinds, body.tags, organization_id=key.organization_id)
        if job is not None:
            if await request.is_disconnected():
                await services.queue.release(job.id, worker)
                return Response(status_code=204)
            else:
                log.info("provisioner.job_acquired", job_id=str(job.id), worker_id=worker, key=key.name)
                return acquired_job_out(job)
        remaining = deadline - loop.time()
        if remaining <= 0:
            return Response(status_code=204)
        await services.queue.wait_for_jobs(
            min(remaining, poll), kinds=body.kinds, tags=body.tags, worker_id=worker
        )


@router.post(
    "/provisioner/daemon/jobs/{job_id}/heartbeat",
    response_model=HeartbeatOut,
    summary="Keep a running job alive; learn whether it was canceled or lost",
)
async def heartbeat(
    job_id: UUID, services: ServicesDep, key: ProvisionerKeyDep, body: WorkerIn
) -> HeartbeatOut:
    await _check_job(services, key, job_id)
    beat = await services.queue.heartbeat(job_id, _worker(key, body.worker_id))
    return HeartbeatOut(status=beat.value)


@router.post(
    "/provisioner/daemon/jobs/{job_id}/logs",
    status_code=204,
    summary="Append log lines to a running job",
    responses={413: {"description": "The lines' output is larger than one post may be."}},
)
async def append_logs(job_id: UUID, services: ServicesDep, key: ProvisionerKeyDep, body: LogsIn) -> Response:
    body.check_total()
    await _check_job(services, key, job_id)
    await services.queue.append_logs(job_id, _worker(key, body.worker_id), log_lines(body))
    return Response(status_code=204)


@router.post(
    "/provisioner/daemon/jobs/{job_id}/complete",
    response_model=CompleteOut,
    summary="Report how a job ended",
)
async def complete(
    job_id: UUID, services: ServicesDep, key: ProvisionerKeyDep, body: CompleteIn
) -> CompleteOut:
    await _check_job(services, key, job_id)
    outcome = job_outcome(body.outcome)
    # A refused completion (the job is no longer this daemon's) is an answer, not an error: 200 with accepted
    # false; a repeat by the daemon that completed it is accepted again, so a lost answer is safe to retry.
    accepted = await services.queue.complete(job_id, _worker(key, body.worker_id), outcome)
    return CompleteOut(accepted=accepted)
