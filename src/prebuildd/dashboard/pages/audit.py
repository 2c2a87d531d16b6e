"""The Audit page: the audit log newest first (who, what, which object, the outcome, when), filtered by actor,
action, object and outcome, paged by entry; for owners (their organization) and the site owner (everything), as
``GET /api/v1/audit``."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from prebuildd.dashboard.pagekit import PageUser, ServicesDep, render
from prebuildd.dashboard.views import audit as views
from prebuildd.domain.audit import OUTCOMES

router = APIRouter()

_Text = Annotated[str | None, Query(max_length=63)]


@router.get("/audit", response_class=HTMLResponse, name="audit_page")
async def audit_page(
    request: Request,
    services: ServicesDep,
    user: PageUser,
    actor: _Text = None,
    action: _Text = None,
    object: _Text = None,
    outcome: _Text = None,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> HTMLResponse:
    query = views.AuditQuery.of(actor=actor, action=action, object=object, outcome=outcome)
    view = await views.audit_view(services, user, query, before=before)
    base = str(request.url_for("audit_page"))
    filters = {k: v for k, v in vars(query).items() if v is not None}

    def page_url(cursor: int | None) -> str:
        params = filters if cursor is None else {**filters, "before": str(cursor)}
        return f"{base}?{urlencode(params)}" if params else base

    context = {
        "view": view,
        "before": before,
        "outcomes": OUTCOMES,
        "blank": views.AuditQuery(),
        "page_url": page_url,
    }
    return render(request, "audit.html", context, user=user)
