"""The Audit page's data: the audit log newest first, filtered by actor, action (an action, or a prefix ending in
'.'), object and outcome, paged by entry id. Who reads what is the API's rule (``GET /api/v1/audit``): the site
owner every entry, an organization's owner that organization's entries, nobody else."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from prebuildd.api.context import Services
from prebuildd.domain.audit import OUTCOMES
from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.identity import audit
from prebuildd.identity.audit import AuditEntry, AuditFilter
from prebuildd.identity.users import User, has_role

PAGE = 50
_MAX_TEXT = 63


@dataclass(frozen=True)
class AuditQuery:
    """The page's filters as the caller typed them (blank: no filter)."""

    actor: str | None = None
    action: str | None = None
    object: str | None = None
    outcome: str | None = None

    @classmethod
    def of(cls, **values: str | None) -> AuditQuery:
        cleaned = {k: (v or "").strip()[:_MAX_TEXT] or None for k, v in values.items()}
        return cls(**cleaned)


@dataclass(frozen=True)
class AuditView:
    entries: list[AuditEntry]
    next_cursor: int | None
    """The ``before`` of the next (older) page; None: this is the last page."""
    query: AuditQuery
    site_wide: bool
    """The caller reads every organization's entries (the site owner)."""


def may_read_audit(user: User) -> bool:
    """Whether the Audit page is for ``user`` (the rule of ``GET /api/v1/audit``: owners and the site owner)."""
    return has_role(user, "owner")


async def audit_view(
    services: Services,
    user: User,
    query: AuditQuery | None = None,
    *,
    before: int | None = None,
    limit: int = PAGE,
) -> AuditView:
    if not may_read_audit(user):
        raise PrebuilddError(
            ErrorCode.FORBIDDEN,
            f"the audit log needs the owner role; you are {user.role or 'not a member'} here",
        )
    query = query or AuditQuery()
    if query.outcome is not None and query.outcome not in OUTCOMES:
        raise PrebuilddError(ErrorCode.INVALID_REQUEST, f"outcome: expected one of {', '.join(OUTCOMES)}")
    scope: list[UUID] | None = None  # the site owner: every entry
    if not user.site_owner:
        scope = [user.organization_id] if user.organization_id else []
    where = AuditFilter(
        actor=query.actor,
        action=query.action,
        object=query.object,
        outcome=query.outcome,
        organization_ids=scope,
    )
    limit = max(1, min(limit, audit.MAX_PAGE))
    found = await audit.entries(services.db, where, before=before, limit=limit + 1)
    page = found[:limit]
    return AuditView(page, page[-1].id if len(found) > limit else None, query, user.site_owner)
