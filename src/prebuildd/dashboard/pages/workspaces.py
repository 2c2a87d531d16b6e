"""The Workspaces page: the caller's workspaces (everyone's for template admins and owners) with their latest
build, one workspace with its builds, and its build log, which grows while the build runs: the page polls a log
fragment every second with htmx, each answer appends the lines after the last one shown, and the fragment of a
finished build carries no poller, so the polling stops."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from prebuildd.dashboard.pagekit import PageUser, ServicesDep, render
from prebuildd.dashboard.views import workspaces as views

router = APIRouter()


@router.get("/workspaces", response_class=HTMLResponse, name="workspaces_page")
async def workspaces_page(request: Request, services: ServicesDep, user: PageUser) -> HTMLResponse:
    view = await views.workspaces_view(services, user)
    return render(request, "workspaces.html", {"view": view, "now": services.clock.now()}, user=user)


@router.get("/workspaces/{workspace_id}", response_class=HTMLResponse, name="workspace_page")
async def workspace_page(
    request: Request,
    workspace_id: UUID,
    services: ServicesDep,
    user: PageUser,
    build: Annotated[
        UUID | None, Query(description="The build whose log is shown (default: the latest)")
    ] = None,
) -> HTMLResponse:
    detail = await views.workspace_detail(services, user, workspace_id)
    shown = build or (detail.workspace.latest_build.id if detail.workspace.latest_build else None)
    log = None
    if shown is not None:
        log = await views.build_log(services, user, shown)
        if log.build.workspace_id != detail.workspace.id:  # a build of another workspace named in the query
            log = None
    context = {"detail": detail, "log": log, "first": True, "oob": False, "now": services.clock.now()}
    return render(request, "workspaces_detail.html", context, user=user)


@router.get("/workspaces/builds/{build_id}/log", response_class=HTMLResponse, name="workspace_build_log")
async def workspace_build_log(
    request: Request,
    build_id: UUID,
    services: ServicesDep,
    user: PageUser,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> HTMLResponse:
    """The lines after ``after`` and the next poller (none once the build has finished), plus the status line
    out of band."""
    log = await views.build_log(services, user, build_id, after=after)
    context = {"log": log, "first": after == 0, "oob": True}
    return render(request, "workspaces_log.html", context, user=user, headers={"Cache-Control": "no-store"})
