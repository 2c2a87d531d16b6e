"""The Templates page: every template with its versions, import statuses and push warnings; the import error
and the import log for template admins and owners (script output, as in the API)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse

from prebuildd.dashboard.pagekit import PageUser, ServicesDep, render
from prebuildd.dashboard.views import templates as views

router = APIRouter()

_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"


@router.get("/templates", response_class=HTMLResponse, name="templates_page")
async def templates_page(request: Request, services: ServicesDep, user: PageUser) -> HTMLResponse:
    view = await views.templates_view(services, user)
    return render(request, "templates_page.html", {"view": view, "now": services.clock.now()}, user=user)


@router.get(
    "/templates/{name}/versions/{version}/log", response_class=HTMLResponse, name="template_import_log"
)
async def template_import_log(
    request: Request,
    name: Annotated[str, Path(max_length=63, pattern=_NAME)],
    version: Annotated[str, Path(max_length=63, pattern=_NAME)],
    services: ServicesDep,
    user: PageUser,
) -> HTMLResponse:
    log = await views.import_log(services, user, name, version)
    context = {"log": log, "first": True, "oob": False}
    return render(request, "templates_page_log.html", context, user=user)


@router.get(
    "/templates/{name}/versions/{version}/log/lines",
    response_class=HTMLResponse,
    name="template_import_log_lines",
)
async def template_import_log_lines(
    request: Request,
    name: Annotated[str, Path(max_length=63, pattern=_NAME)],
    version: Annotated[str, Path(max_length=63, pattern=_NAME)],
    services: ServicesDep,
    user: PageUser,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> HTMLResponse:
    """The import's lines after ``after`` and the next poller (none once the import has finished), plus its
    status out of band: the import log grows on the page like a build log."""
    log = await views.import_log(services, user, name, version, after=after)
    context = {"log": log, "first": after == 0, "oob": True}
    return render(
        request, "templates_page_log_lines.html", context, user=user, headers={"Cache-Control": "no-store"}
    )
