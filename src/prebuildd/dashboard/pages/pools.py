"""The Pools page: every preset of the user's organizations with its counts, status, next action and pool-size
sparkline; the table refreshes every 2 s."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from prebuildd.dashboard.pagekit import PageUser, render

router = APIRouter()


@router.get("/pools", response_class=HTMLResponse, name="pools_page")
async def pools_page(request: Request, user: PageUser) -> HTMLResponse:
    return render(request, "pools.html", {}, user=user)
