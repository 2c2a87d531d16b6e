"""Route: the audit log, newest first, filtered and paged. The site owner reads every entry; an organization's
owner reads the entries of the organization the request acts in (site-wide ones, such as a pause, are not).

``since`` takes a time (ISO 8601) or a duration back from now (``24h``, ``7d``); ``cursor`` is the
``next_cursor`` of the previous page.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from prebuildd.api.deps import OwnerDep, ServicesDep
from prebuildd.api.models import LookupText
from prebuildd.domain.audit import OUTCOMES
from prebuildd.domain.durations import parse_duration
from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.identity import audit
from prebuildd.identity.audit import AuditEntry, AuditFilter

router = APIRouter(tags=["audit"])


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="The actor's username when the entry was written ('system': the server)")
    actor_id: UUID | None
    token_id: UUID | None = Field(description="The API token (or provisioner key) the request carried")
    organization_id: UUID | None = Field(description="None for site-wide actions")
    action: str = Field(description="A stable dotted name: template.push, user.role, ...")
    object_type: str
    object_id: str | None
    object_name: str
    outcome: str = Field(description="ok | denied | invalid | conflict | error")
    error_code: str | None
    error_message: str | None
    detail: dict[str, Any]
    request_id: str | None
    source_ip: str | None

    @classmethod
    def from_entry(cls, e: AuditEntry) -> AuditEntryOut:
        return cls(
            id=e.id,
            at=e.at,
            actor=e.actor_name,
            actor_id=e.actor_id,
            token_id=e.token_id,
            organization_id=e.organization_id,
            action=e.action,
            object_type=e.object_type,
            object_id=e.object_id,
            object_name=e.object_name,
            outcome=e.outcome,
            error_code=e.error_code,
            error_message=e.error_message,
            detail=dict(e.detail),
            request_id=e.request_id,
            source_ip=e.source_ip,
        )


class AuditPage(BaseModel):
    entries: list[AuditEntryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page; null: no more")


def _since(value: str | None, now: datetime) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        pass
    try:
        return now - timedelta(seconds=parse_duration(value))
    except ValueError:
        raise PrebuilddError(
            ErrorCode.INVALID_REQUEST,
            f"since: {value!r} is neither a time (2026-01-05T09:00:00Z) nor a duration (24h, 7d)",
        ) from None


@router.get(
    "/audit",
    response_model=AuditPage,
    summary="The audit log, newest first (site owner: all; an organization's owner: that organization's)",
)
async def audit_log(
    services: ServicesDep,
    user: OwnerDep,
    actor: Annotated[LookupText | None, Query(description="Username (or user id) of the actor")] = None,
    action: Annotated[
        LookupText | None,
        Query(description="An action (template.push), or a prefix ending in '.' (template.)"),
    ] = None,
    since: Annotated[
        LookupText | None, Query(description="A time, or a duration back from now (24h)")
    ] = None,
    object: Annotated[LookupText | None, Query(description="The object's name or id")] = None,
    outcome: Annotated[LookupText | None, Query(description=" | ".join(OUTCOMES))] = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_PAGE)] = 100,
    cursor: Annotated[
        int | None, Query(ge=1, le=2**62, description="The previous page's next_cursor")
    ] = None,
) -> AuditPage:
    if outcome is not None and outcome not in OUTCOMES:
        raise PrebuilddError(ErrorCode.INVALID_REQUEST, f"outcome: expected one of {', '.join(OUTCOMES)}")
    scope: list[UUID] | None = None  # the site owner: every entry
    if not user.site_owner:
        scope = [user.organization_id] if user.organization_id else []
    where = AuditFilter(
        actor=actor,
        action=action,
        since=_since(since, services.clock.now()),
        object=object,
        outcome=outcome,
        organization_ids=scope,
    )
    found = await audit.entries(services.db, where, before=cursor, limit=limit + 1)
    page = found[:limit]
    more = len(found) > limit
    return AuditPage(
        entries=[AuditEntryOut.from_entry(e) for e in page], next_cursor=str(page[-1].id) if more else None
    )
