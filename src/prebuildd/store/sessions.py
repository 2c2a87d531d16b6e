"""The dashboard session repository: sessions keyed by the hash of their id, each tied to the API token it was
opened with (queries in ``queries/sessions.sql``). The session id itself never reaches this module."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from prebuildd.store.db import Conn
from prebuildd.store.identity import TokenHolder, _user
from prebuildd.store.rows import execute, fetch_one


@dataclass(frozen=True)
class SessionHolder:
    """Who a live session signs in: the token's holder, the organization the pages act in (None: the user's own
    choice is not made yet) and when the session ends."""

    holder: TokenHolder
    organization_id: UUID | None
    expires_at: datetime


async def insert(conn: Conn, *, id_hash: bytes, token_id: UUID, now: datetime, expires_at: datetime) -> None:
    await execute(
        conn,
        "sessions.insert",
        {"id_hash": id_hash, "token_id": token_id, "now": now, "expires_at": expires_at},
    )


async def holder(conn: Conn, id_hash: bytes, now: datetime) -> SessionHolder | None:
    row = await fetch_one(conn, "sessions.holder", {"id_hash": id_hash, "now": now})
    if row is None:
        return None
    token = TokenHolder(_user(row), row["token_id"], row["token_last_used_at"])
    return SessionHolder(token, row["session_organization_id"], row["session_expires_at"])


async def set_organization(conn: Conn, id_hash: bytes, organization_id: UUID | None) -> None:
    await execute(conn, "sessions.set_organization", {"id_hash": id_hash, "organization_id": organization_id})


async def delete(conn: Conn, id_hash: bytes) -> bool:
    """Whether there was such a session."""
    return await fetch_one(conn, "sessions.delete", {"id_hash": id_hash}) is not None


async def prune(conn: Conn, now: datetime) -> None:
    await execute(conn, "sessions.prune", {"now": now})
