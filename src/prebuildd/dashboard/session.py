"""Dashboard sessions: signing in with an API token, the session cookie, the signed-in user of a page, and the
CSRF and origin checks every POST goes through.

The cookie holds a random session id (HttpOnly, SameSite=Strict, Secure over https, with an expiry); the
database keeps only its hash, tied to the API token the user signed in with, so revoking the token ends the
session at the next request. The CSRF token of a session is derived from its id (an HMAC): it is in a hidden
field of every form and in the ``hx-headers`` of every page, and a POST must carry it and come from this site's
own origin. No page ever shows the API token, the session id, or anything they could be rebuilt from.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated
from urllib.parse import parse_qsl, urlsplit
from uuid import UUID

import structlog
from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prebuildd.api.auditing import remember_actor
from prebuildd.api.context import Services
from prebuildd.api.deps import ORGANIZATION_HEADER, get_services
from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.identity import auth, users
from prebuildd.identity.audit import AuditContext
from prebuildd.identity.auth import TokenHolder
from prebuildd.identity.users import Membership, User
from prebuildd.store import sessions as store

log = structlog.get_logger(__name__)

COOKIE = "prebuildd_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
MAX_FORM_BYTES = 64 * 1024  # the largest form the dashboard has is a handful of short fields

_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class PageSession:
    """What the layout of a page needs to know of the signed-in user besides the ``User``: the CSRF token of
    the forms (None for a request signed with a bearer token, which has no session and shows no forms), the
    user's organizations, and when the session ends."""

    csrf: str | None
    organizations: list[Membership]
    expires_at: datetime | None


def _hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def csrf_of(session_id: str) -> str:
    """The session's CSRF token: not the id itself (a page shows it), and not reversible to it."""
    return hmac.new(session_id.encode(), b"prebuildd dashboard csrf", hashlib.sha256).hexdigest()


def cookie_session(request: Request) -> str | None:
    value = request.cookies.get(COOKIE)
    return value if value and len(value) <= 128 else None


async def open_session(services: Services, secret: str) -> tuple[str, timedelta] | None:
    """A new session for the holder of the API token ``secret``, or None when it is no active token; the old
    expired sessions are dropped on the way."""
    holder = await auth.holder_of_token(services.db, services.clock, secret.strip())
    if holder is None:
        return None
    now = services.clock.now()
    expires_at = now + timedelta(seconds=services.config.dashboard_session_ttl)
    session_id = secrets.token_urlsafe(32)
    async with services.db.transaction() as conn:
        await store.prune(conn, now)
        await store.insert(
            conn, id_hash=_hash(session_id), token_id=holder.token_id, now=now, expires_at=expires_at
        )
    log.info("dashboard.login", user=holder.user.username, token_id=str(holder.token_id))
    return session_id, expires_at - now


async def close_session(services: Services, session_id: str) -> None:
    async with services.db.transaction() as conn:
        await store.delete(conn, _hash(session_id))


async def choose_organization(services: Services, session_id: str, organization_id: UUID | None) -> None:
    async with services.db.transaction() as conn:
        await store.set_organization(conn, _hash(session_id), organization_id)


def set_cookie(request: Request, response: Response, session_id: str, lifetime: timedelta) -> None:
    # Max-Age, not Expires: relative to the browser's clock, so a skewed clock on either side does not matter.
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=max(0, int(lifetime.total_seconds())),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


def login_required() -> PrebuilddError:
    return PrebuilddError(ErrorCode.UNAUTHENTICATED, "sign in to the dashboard with an API token")


async def page_user(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The signed-in user of a page, as a member of the organization the session acts in (the user's only or
    default one until they choose). A request with an API token as a bearer header is served too (a script
    reading a page; it gets no session and so no forms)."""
    now = services.clock.now()
    session_id = cookie_session(request)
    holder: TokenHolder | None = None
    csrf: str | None = None
    organization: str | None = None
    expires_at: datetime | None = None
    if session_id is not None:
        async with services.db.autocommit() as conn:
            found = await store.holder(conn, _hash(session_id), now)
        if found is not None:
            holder, csrf, expires_at = found.holder, csrf_of(session_id), found.expires_at
            organization = str(found.organization_id) if found.organization_id else None
    if holder is None and credentials is not None:
        holder = await auth.holder_of_token(services.db, services.clock, credentials.credentials)
        organization = request.headers.get(ORGANIZATION_HEADER) or None
    if holder is None:
        raise login_required()
    remember_actor(request, services, holder)
    joined = await users.memberships(services.db, holder.user)
    try:
        user = await users.acting_user(services.db, holder.user, organization, needed=False)
    except PrebuilddError:  # the chosen organization is gone, or the user left it
        user = await users.acting_user(services.db, holder.user, None, needed=False)
    if user.organization_id is None and joined:  # a member of several who has not chosen yet: the first
        user = await users.acting_user(services.db, holder.user, str(joined[0].organization.id))
    audit: AuditContext | None = getattr(request.state, "audit", None)
    if audit is not None:
        audit.organization_id = user.organization_id
    request.state.dashboard = PageSession(csrf, joined, expires_at)
    return user


PageUser = Annotated[User, Depends(page_user)]


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def check_origin(request: Request) -> None:
    """A POST must say it comes from this site: its ``Origin``, or else its ``Referer``, is the site's own (a
    browser sends one of them on every form and fetch POST; a request with neither is refused)."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer:
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
    if origin != _own_origin(request):
        raise PrebuilddError(
            ErrorCode.FORBIDDEN, "refused: a dashboard form must be sent from the dashboard's own pages"
        )


async def form_of(request: Request) -> dict[str, str]:
    """The fields of a url-encoded form body (the last value of a repeated field)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise PrebuilddError(ErrorCode.INVALID_REQUEST, "form too large")
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=100))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PrebuilddError(ErrorCode.INVALID_REQUEST, "invalid form") from exc


async def checked_form(request: Request, user: PageUser) -> dict[str, str]:
    """The form of a POST from a signed-in session, after the origin and CSRF checks (403 on either)."""
    check_origin(request)
    form = await form_of(request)
    session: PageSession = request.state.dashboard
    sent = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD, "")
    if session.csrf is None or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise PrebuilddError(
            ErrorCode.FORBIDDEN, "refused: missing or wrong CSRF token (reload the page and try again)"
        )
    return form


CheckedForm = Annotated[dict[str, str], Depends(checked_form)]
