"""The Queue page: pending jobs with why each waits, running jobs with their daemon, the oldest pending age and
the daemons online; template admins and owners only, as ``GET /api/v1/jobs``. The body refreshes every 2 s."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from prebuildd.api.context import Services
from prebuildd.dashboard.pagekit import PageUser, ServicesDep, render
from prebuildd.dashboard.views import queue as views
from prebuildd.identity.users import User

router = APIRouter()


async def _context(services: Services, user: User) -> dict[str, object]:
    view = await views.queue_view(services, user)
    return {"view": view, "listed": views.LISTED}


@router.get("/queue", response_class=HTMLResponse, name="queue_page")
async def queue_page(request: Request, services: ServicesDep, user: PageUser) -> HTMLResponse:
    return render(request, "queue.html", await _context(services, user), user=user)


@router.get("/queue/body", response_class=HTMLResponse, name="queue_fragment")
async def queue_fragment(request: Request, services: ServicesDep, user: PageUser) -> HTMLResponse:
    return render(
        request,
        "queue_body.html",
        await _context(services, user),
        user=user,
        headers={"Cache-Control": "no-store"},
    )
