"""The audit log repository: append an entry, read entries newest first with filters, prune old ones in batches.

The queries are in ``queries/audit.sql``. An entry keeps the names of its actor and object as they were when it
was written (no foreign keys), so it stays readable once they are renamed or gone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from prebuildd.store.db import Conn
from prebuildd.store.rows import execute, fetch_all, fetch_val, jsonb


@dataclass(frozen=True)
class NewAuditEntry:
    """What is recorded of one action; ``outcome`` is ok, denied, invalid, conflict or error."""

    at: datetime
    actor_id: UUID | None
    actor_name: str
    token_id: UUID | None
    organization_id: UUID | None
    action: str
    object_type: str
    object_id: str | None
    object_name: str
    outcome: str
    error_code: str | None = None
    error_message: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    source_ip: str | None = None


@dataclass(frozen=True)
class AuditEntry(NewAuditEntry):
    id: int = 0


@dataclass(frozen=True)
class AuditFilter:
    """A None is no filter. ``action`` ending in '.' or '.*' matches every action under that prefix."""

    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    object: str | None = None
    outcome: str | None = None
    organization_ids: Sequence[UUID] | None = None
    """Only entries of these organizations (an org owner's view); None: every entry (a site owner's)."""


async def insert_entry(conn: Conn, entry: NewAuditEntry) -> int:
    params = {name: getattr(entry, name) for name in NewAuditEntry.__dataclass_fields__}
    params["detail"] = jsonb(dict(entry.detail))
    entry_id: int = await fetch_val(conn, "audit.insert_entry", params)
    return entry_id


async def entries(conn: Conn, where: AuditFilter, *, before: int | None, limit: int) -> list[AuditEntry]:
    action, prefix = where.action, None
    if where.action is not None and where.action.endswith((".", ".*")):
        action, prefix = None, where.action.removesuffix("*")
    rows = await fetch_all(
        conn,
        "audit.entries",
        {
            "before": before,
            "actor": where.actor,
            "action": action,
            "action_prefix": prefix,
            "since": where.since,
            "object": where.object,
            "outcome": where.outcome,
            "organization_ids": None if where.organization_ids is None else list(where.organization_ids),
            "limit": limit,
        },
    )
    return [AuditEntry(**row) for row in rows]


async def prune(conn: Conn, before: datetime, batch: int) -> int:
    """Delete at most ``batch`` entries older than ``before``; how many were deleted."""
    return await execute(conn, "audit.prune", {"before": before, "batch": batch})
