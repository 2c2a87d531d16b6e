"""The workspace-agent repository: what an agent reports (its lifecycle) and learns (its workspace's claim).

Tokens are issued by the queue at acquire (``store.jobs.issue_agent_token``) and resolved by ``identity.auth``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from prebuildd.store.db import Conn
from prebuildd.store.rows import fetch_one


@dataclass(frozen=True)
class WorkspaceClaim:
    """An agent's workspace as the claim long poll sees it."""

    claimed_at: datetime | None
    workspace_name: str
    owner_name: str
    owner_id: UUID
    deleted: bool


async def set_lifecycle(conn: Conn, agent_id: UUID, lifecycle: str, now: datetime) -> str | None:
    """Record the agent's lifecycle state (``ready`` also stamps ``ready_at``); the state, or None (no agent)."""
    row = await fetch_one(conn, "agents.set_lifecycle", {"id": agent_id, "lifecycle": lifecycle, "now": now})
    return None if row is None else str(row["lifecycle"])


async def workspace_claim(conn: Conn, workspace_id: UUID) -> WorkspaceClaim | None:
    row = await fetch_one(conn, "agents.workspace_claim", {"workspace_id": workspace_id})
    return None if row is None else WorkspaceClaim(**row)
