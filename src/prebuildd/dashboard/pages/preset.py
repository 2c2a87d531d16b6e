"""The Preset page: one pool in depth."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from prebuildd.dashboard.pagekit import PageUser, render

router = APIRouter()


@router.get("/orgs/{org}/pools/{template}/{preset}", response_class=HTMLResponse, name="preset_page")
async def preset_page(request: Request, org: str, template: str, preset: str, user: PageUser) -> HTMLResponse:
    return render(request, "preset.html", {"template": template, "preset": preset}, user=user)
