"""Puts the dashboard on the API's application: its pages at ``/`` (out of the OpenAPI document), its
vendored assets at ``/static``, and HTML error pages for its own routes (the API's routes keep their JSON
errors). Called by the server composition once the API app exists."""

from __future__ import annotations

import inspect
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from prebuildd.api.auditing import record_refusal_of
from prebuildd.api.context import Services
from prebuildd.dashboard.pagekit import TEMPLATES
from prebuildd.dashboard.pages import (
    actions,
    audit,
    login,
    pools,
    preset,
    queue,
    templates_page,
    workspaces,
)
from prebuildd.domain.errors import ErrorCode, PrebuilddError

STATIC = Path(__file__).parent / "static"
PAGES = (login, pools, preset, actions, workspaces, queue, templates_page, audit)
# Paths that are not the dashboard's: their errors stay the API's JSON body.
_NOT_PAGES = ("/api/", "/docs", "/openapi.json", "/healthz", "/readyz", "/metrics", "/static/")


def install_dashboard(app: FastAPI, services: Services) -> None:
    del services  # the pages read it from app.state, like the API's routes
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for page in PAGES:
        app.include_router(page.router, include_in_schema=False)
    api_handler = app.exception_handlers[PrebuilddError]

    async def refusal(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PrebuilddError)
        if request.url.path.startswith(_NOT_PAGES) or request.url.path in _NOT_PAGES:
            answer = api_handler(request, exc)
            response: Response = await answer if inspect.isawaitable(answer) else answer
            return response
        await record_refusal_of(request, exc)
        if exc.code is ErrorCode.UNAUTHENTICATED:
            return login.login_redirect(request)
        page: Response = TEMPLATES.TemplateResponse(
            request,
            "error.html",
            {"error": exc, "status": exc.status},
            status_code=exc.status,
            headers={"Cache-Control": "no-store"},
        )
        return page

    app.add_exception_handler(PrebuilddError, refusal)
