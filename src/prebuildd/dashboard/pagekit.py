"""What the Workspaces, Queue, Templates and Audit pages share: the services, the signed-in user of the page,
and rendering a template of ``dashboard/templates`` (pages extend ``base.html``) with the helpers they write
with. A refusal is the API's own ``PrebuilddError`` (403, or 404 for what the caller may not see)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from prebuildd.api.context import Services
from prebuildd.api.deps import get_services
from prebuildd.dashboard.session import page_user
from prebuildd.dashboard.views.audit import may_read_audit
from prebuildd.dashboard.views.text import HELPERS
from prebuildd.domain.permissions import Action
from prebuildd.identity.users import User, may

TEMPLATES = Jinja2Templates(
    env=Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,  # every value a page shows came from someone else: escape all of it
        undefined=StrictUndefined,
    )
)


def page_allowed(user: User, page: str) -> bool:
    """Whether ``page`` (a route name) is for ``user``: the navigation lists only those. The pages check the same
    rules themselves (a link typed by hand is refused as the API would refuse it)."""
    if page == "queue_page":
        return may(user, Action.JOBS_READ)
    if page == "audit_page":
        return may_read_audit(user)
    return True


TEMPLATES.env.globals["page_allowed"] = page_allowed

ServicesDep = Annotated[Services, Depends(get_services)]
PageUser = Annotated[User, Depends(page_user)]


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any],
    *,
    user: User,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    values = {"user": user, "h": HELPERS, **context}
    response: HTMLResponse = TEMPLATES.TemplateResponse(request, name, values, headers=dict(headers or {}))
    return response
