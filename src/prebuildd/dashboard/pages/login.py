"""Signing in and out: the login form (an API token), the session it opens, logout, and choosing the
organization the pages act in. ``GET /`` leads to the pools, or to the login form without a session."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from prebuildd.api.context import Services
from prebuildd.api.deps import get_services
from prebuildd.dashboard import session
from prebuildd.dashboard.pagekit import TEMPLATES
from prebuildd.dashboard.session import CheckedForm, PageUser
from prebuildd.domain.errors import ErrorCode, PrebuilddError

router = APIRouter()

ServicesDep = Annotated[Services, Depends(get_services)]


def _safe_next(target: str | None) -> str:
    """Only a path of this site (``/x``, not ``//host`` nor a URL): a login link cannot send the user away."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/pools"


@router.get("/", include_in_schema=False)
async def index(request: Request) -> RedirectResponse:
    target = "/pools" if session.cookie_session(request) else "/login"
    return RedirectResponse(target, status_code=303)


def _login_form(request: Request, *, next_path: str, error: str | None, status: int = 200) -> HTMLResponse:
    response: HTMLResponse = TEMPLATES.TemplateResponse(
        request,
        "login.html",
        {"next_path": next_path, "error": error},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )
    return response


@router.get("/login", response_class=HTMLResponse, name="login_page", include_in_schema=False)
async def login_page(
    request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
) -> Response:
    return _login_form(request, next_path=_safe_next(next), error=None)


@router.post("/login", name="login", include_in_schema=False)
async def login(request: Request, services: ServicesDep) -> Response:
    # No session yet, so no CSRF token to check: the origin check (and the SameSite cookie) keep another site
    # from signing a browser in with the other site's token.
    session.check_origin(request)
    form = await session.form_of(request)
    next_path = _safe_next(form.get("next"))
    opened = await session.open_session(services, form.get("token", ""))
    if opened is None:
        return _login_form(request, next_path=next_path, error="That is not an active API token.", status=401)
    session_id, lifetime = opened
    response = RedirectResponse(next_path, status_code=303)
    session.set_cookie(request, response, session_id, lifetime)
    return response


@router.post("/logout", name="logout", include_in_schema=False)
async def logout(request: Request, services: ServicesDep, form: CheckedForm) -> Response:
    session_id = session.cookie_session(request)
    if session_id is not None:
        await session.close_session(services, session_id)
    response = RedirectResponse("/login", status_code=303)
    session.clear_cookie(request, response)
    return response


@router.post("/organization", name="choose_organization", include_in_schema=False)
async def choose_organization(
    request: Request, services: ServicesDep, user: PageUser, form: CheckedForm
) -> Response:
    page: session.PageSession = request.state.dashboard
    try:
        chosen = UUID(form.get("organization", ""))
    except ValueError as exc:
        raise PrebuilddError(ErrorCode.INVALID_REQUEST, "choose one of your organizations") from exc
    if not user.site_owner and chosen not in {m.organization.id for m in page.organizations}:
        raise PrebuilddError(ErrorCode.NOT_FOUND, f"organization {chosen} not found")
    session_id = session.cookie_session(request)
    if session_id is not None:
        await session.choose_organization(services, session_id, chosen)
    return RedirectResponse(_safe_next(form.get("next")), status_code=303)


def login_redirect(request: Request) -> Response:
    """Where a page sends a browser without a session: the login form, back to this page afterwards (for an
    htmx poll, an ``HX-Redirect`` so the whole page goes, not the fragment)."""
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = f"/login?next={quote(path, safe='/')}"
    response: Response
    if request.headers.get("hx-request"):
        response = Response(status_code=401, headers={"HX-Redirect": target})
    else:
        response = RedirectResponse(target, status_code=303)
    if session.cookie_session(request) is not None:  # a session that ended: drop its cookie too
        session.clear_cookie(request, response)
    return response
