"""Routes: workspaces, their builds, and build logs (a JSON page, or an NDJSON stream that follows the job).

Creating a workspace goes through ``WorkspaceCreator.create_workspace``: a ready prebuild is handed over when a preset
fits, otherwise the builder starts a cold build. Later transitions go straight to the builder. Members see and
act on their own workspaces only; anyone else's is a 404 for them.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from prebuildd.api.context import Services
from prebuildd.api.deps import ServicesDep, UserDep
from prebuildd.api.log_stream import MEDIA_TYPE, follow_job_logs
from prebuildd.api.lookups import (
    organization_of,
    visible_build,
    visible_workspace,
)
from prebuildd.api.models import (
    BuildCreate,
    BuildOut,
    LogLineOut,
    TemplateName,
    WorkspaceCreate,
    WorkspaceName,
    WorkspaceOut,
)
from prebuildd.domain.errors import not_found
from prebuildd.domain.jobs import JobPriority, Transition
from prebuildd.prebuilds.claim import CreateRequest
from prebuildd.workspaces.builder import BuildRequest
from prebuildd.workspaces.reads import (
    build_by_id,
    build_log_lines,
    builds_of_workspace,
    list_workspaces,
    workspace_by_id,
)
from prebuildd.workspaces.requests import (
    check_build_parameters,
    creation_target,
    listed_owner,
    owner_for_creation,
)

router = APIRouter(tags=["workspaces"])

_LOG_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The lines as a JSON array; with `follow=true`, a stream of NDJSON lines ending with "
        '`{"end": true, "status": …}` once the job has finished.',
        "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
    }
}


async def _workspace_out(services: Services, workspace_id: UUID) -> WorkspaceOut:
    workspace = await workspace_by_id(services.db, workspace_id)
    if workspace is None:  # deleted workspaces still answer, so only a broken database gets here
        raise not_found(f"workspace {workspace_id}")
    return WorkspaceOut.from_workspace(workspace)


@router.post(
    "/workspaces",
    response_model=WorkspaceOut,
    status_code=201,
    summary="Create a workspace: a ready prebuild when a preset fits, else a cold build",
    responses={406: {"description": "The template's version is still importing."}},
)
async def create_workspace(body: WorkspaceCreate, services: ServicesDep, user: UserDep) -> WorkspaceOut:
    organization_id = await organization_of(services, user)
    template, preset_id = await creation_target(services.db, organization_id, body.template, body.preset)
    owner = await owner_for_creation(services.db, user, body.owner)
    created = await services.workspace_creator().create_workspace(
        CreateRequest(
            organization_id=organization_id,
            owner_id=owner.id,
            initiator_id=user.id,
            template_id=template.id,
            name=body.name,
            preset_id=preset_id,
            parameters=body.parameters,
        ),
    )
    workspace = await _workspace_out(services, created.workspace_id)
    return workspace.model_copy(update={"claimed": created.claimed, "seconds": round(created.seconds, 4)})


@router.get("/workspaces", response_model=list[WorkspaceOut], summary="Workspaces with their latest build")
async def list_all(
    services: ServicesDep,
    user: UserDep,
    owner: Annotated[
        str,
        Query(
            description="`me`, `all` (template admins) or a username (template admins)",
            max_length=63,
            pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
        ),
    ] = "me",
    template: Annotated[TemplateName | None, Query()] = None,
    name: Annotated[WorkspaceName | None, Query()] = None,
) -> list[WorkspaceOut]:
    organization_id = await organization_of(services, user)
    owner_id = await listed_owner(services.db, user, owner)
    workspaces = await list_workspaces(
        services.db, organization_id=organization_id, owner_id=owner_id, template=template, name=name
    )
    return [WorkspaceOut.from_workspace(workspace) for workspace in workspaces]


@router.get(
    "/workspaces/{workspace_id}", response_model=WorkspaceOut, summary="One workspace (deleted ones too)"
)
async def get_workspace(workspace_id: UUID, services: ServicesDep, user: UserDep) -> WorkspaceOut:
    return WorkspaceOut.from_workspace(await visible_workspace(services, user, workspace_id))


@router.post(
    "/workspaces/{workspace_id}/builds",
    response_model=BuildOut,
    status_code=201,
    summary="Start, stop or delete a workspace",
    responses={409: {"description": "The workspace already has an active build."}},
)
async def create_build(
    workspace_id: UUID, body: BuildCreate, services: ServicesDep, user: UserDep
) -> BuildOut:
    workspace = await visible_workspace(services, user, workspace_id)
    transition = Transition(body.transition)
    check_build_parameters(transition, body.parameters)
    request = BuildRequest(
        transition=transition,
        initiator_id=user.id,
        workspace_id=workspace.id,
        parameters=body.parameters,
        priority=JobPriority.HUMAN,
    )
    async with services.db.transaction() as conn:
        created = await services.builder.build(conn, request)
    found = await build_by_id(services.db, created.build_id)
    if found is None:  # the build committed above; only a broken database loses it
        raise not_found(f"build {created.build_id}")
    return BuildOut.from_build(found.build)


@router.get(
    "/workspaces/{workspace_id}/builds",
    response_model=list[BuildOut],
    summary="A workspace's builds, newest first",
)
async def list_builds(workspace_id: UUID, services: ServicesDep, user: UserDep) -> list[BuildOut]:
    await visible_workspace(services, user, workspace_id)
    return [BuildOut.from_build(build) for build in await builds_of_workspace(services.db, workspace_id)]


@router.get(
    "/builds/{build_id}/logs",
    response_model=list[LogLineOut],
    summary="A build's log lines; `follow=true` streams them (NDJSON) until the build's job finishes",
    responses=_LOG_RESPONSES,
)
async def build_logs(
    build_id: UUID,
    services: ServicesDep,
    user: UserDep,
    after: Annotated[int, Query(ge=0, le=2**62, description="Only lines with an id above this one.")] = 0,
    follow: Annotated[bool, Query(description="Stream new lines until the job finishes.")] = False,
    limit: Annotated[
        int, Query(ge=1, le=10_000, description="Without follow: at most this many lines; page with `after`.")
    ] = 10_000,
) -> Any:
    build = await visible_build(services, user, build_id)
    if follow:
        return StreamingResponse(
            follow_job_logs(services.db, services.listener, build.job_id, after),
            media_type=MEDIA_TYPE,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
    lines = await build_log_lines(services.db, build.job_id, after=after, limit=limit)
    return [LogLineOut.from_line(line) for line in lines]
