"""The identity repository: organizations, users, memberships, API tokens, provisioner keys and agent tokens.

Takes and returns frozen dataclasses; the queries are in ``queries/identity.sql`` and ``queries/auth.sql`` (agent
tokens: ``queries/agents.sql``). Secrets never reach this module: it sees their hashes only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from prebuildd.store.db import Conn
from prebuildd.store.rows import execute, fetch_all, fetch_all_as, fetch_one, fetch_val, jsonb


@dataclass(frozen=True)
class Organization:
    id: UUID
    name: str
    display_name: str
    is_default: bool
    created_at: datetime


@dataclass(frozen=True)
class User:
    """A person (or the built-in prebuilds user, ``is_system``) who owns workspaces; fields in column order."""

    id: UUID
    username: str
    email: str
    role: str
    is_system: bool
    suspended: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Token:
    """An API token as its holder sees it (never the secret nor its hash)."""

    id: UUID
    user_id: UUID
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class TokenHolder:
    """The user behind a token, and when the token was last used (to touch it at most once a minute)."""

    user: User
    token_id: UUID
    token_last_used_at: datetime | None


@dataclass(frozen=True)
class ProvisionerKey:
    """A key standalone provisioner daemons authenticate with; ``tags`` are what its daemons may offer."""

    id: UUID
    organization_id: UUID
    name: str
    tags: Mapping[str, str]
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class Agent:
    """A workspace agent behind an agent token, with what it needs to know of its workspace."""

    id: UUID
    name: str
    lifecycle: str
    workspace_id: UUID
    workspace_name: str
    owner_id: UUID
    owner_name: str
    claimed_at: datetime | None
    workspace_created_at: datetime
    template_id: UUID


def _user(row: Mapping[str, Any]) -> User:
    return User(
        row["id"],
        row["username"],
        row["email"],
        row["role"],
        row["is_system"],
        row["suspended"],
        row["created_at"],
        row["updated_at"],
    )


def _key(row: Mapping[str, Any]) -> ProvisionerKey:
    return ProvisionerKey(
        row["id"],
        row["organization_id"],
        row["name"],
        row["tags"] or {},
        row["created_at"],
        row["revoked_at"],
    )


# -- organizations and users -------------------------------------------------------------------------------


async def default_organization(conn: Conn) -> Organization | None:
    row = await fetch_one(conn, "identity.default_organization")
    return None if row is None else Organization(**row)


async def insert_organization(
    conn: Conn, *, id: UUID, name: str, display_name: str, is_default: bool, now: datetime
) -> Organization:
    row = await fetch_one(
        conn,
        "identity.insert_organization",
        {"id": id, "name": name, "display_name": display_name, "is_default": is_default, "now": now},
    )
    return Organization(**_returned(row, "identity.insert_organization"))


async def insert_user(conn: Conn, *, id: UUID, username: str, email: str, role: str, now: datetime) -> User:
    row = await fetch_one(
        conn,
        "identity.insert_user",
        {"id": id, "username": username, "email": email, "role": role, "now": now},
    )
    return _user(_returned(row, "identity.insert_user"))


async def add_member(conn: Conn, *, organization_id: UUID, user_id: UUID, now: datetime) -> None:
    await execute(
        conn, "identity.add_member", {"organization_id": organization_id, "user_id": user_id, "now": now}
    )


async def delete_user(conn: Conn, user_id: UUID) -> None:
    await execute(conn, "identity.delete_user", {"id": user_id})


async def user_by_name(conn: Conn, username: str) -> User | None:
    row = await fetch_one(conn, "identity.user_by_name", {"username": username})
    return None if row is None else _user(row)


async def first_owner(conn: Conn) -> User | None:
    row = await fetch_one(conn, "identity.first_owner")
    return None if row is None else _user(row)


async def users(conn: Conn) -> list[User]:
    return await fetch_all_as(conn, "identity.users", None, User)


async def lock_active_owners(conn: Conn) -> None:
    await fetch_all(conn, "identity.lock_active_owners")


async def active_owner_count(conn: Conn) -> int:
    return int(await fetch_val(conn, "identity.active_owner_count"))


async def update_user(
    conn: Conn, *, id: UUID, role: str | None, suspended: bool | None, now: datetime
) -> User | None:
    """The user after the change (a None keeps a value); None when there is no such (non-system) user."""
    row = await fetch_one(
        conn, "identity.update_user", {"id": id, "role": role, "suspended": suspended, "now": now}
    )
    return None if row is None else _user(row)


async def organization_of_user(conn: Conn, user_id: UUID) -> UUID | None:
    organization_id: UUID | None = await fetch_val(conn, "auth.organization_of_user", {"user_id": user_id})
    return organization_id


# -- API tokens --------------------------------------------------------------------------------------------


async def insert_token(
    conn: Conn,
    *,
    id: UUID,
    user_id: UUID,
    name: str,
    token_hash: bytes,
    now: datetime,
    expires_at: datetime | None,
) -> Token:
    row = await fetch_one(
        conn,
        "auth.insert_token",
        {
            "id": id,
            "user_id": user_id,
            "name": name,
            "token_hash": token_hash,
            "now": now,
            "expires_at": expires_at,
        },
    )
    return Token(**_returned(row, "auth.insert_token"))


async def holder_of_token(conn: Conn, token_hash: bytes, now: datetime) -> TokenHolder | None:
    row = await fetch_one(conn, "auth.user_by_token", {"token_hash": token_hash, "now": now})
    if row is None:
        return None
    return TokenHolder(_user(row), row["token_id"], row["token_last_used_at"])


async def touch_token(conn: Conn, token_id: UUID, now: datetime, since: datetime) -> None:
    """Set the token's last use to ``now`` unless a use after ``since`` is already recorded."""
    await execute(conn, "auth.touch_token", {"id": token_id, "now": now, "since": since})


async def tokens_of_user(conn: Conn, user_id: UUID) -> list[Token]:
    return await fetch_all_as(conn, "auth.tokens_of_user", {"user_id": user_id}, Token)


async def revoke_token(conn: Conn, *, id: UUID, user_id: UUID, any_user: bool, now: datetime) -> bool:
    """Whether an active token was revoked: ``user_id``'s own, or anyone's with ``any_user``."""
    row = await fetch_one(
        conn, "auth.revoke_token", {"id": id, "user_id": user_id, "any_user": any_user, "now": now}
    )
    return row is not None


# -- provisioner keys --------------------------------------------------------------------------------------


async def insert_provisioner_key(
    conn: Conn,
    *,
    id: UUID,
    organization_id: UUID,
    name: str,
    key_hash: bytes,
    tags: Mapping[str, str],
    now: datetime,
) -> ProvisionerKey:
    row = await fetch_one(
        conn,
        "auth.insert_provisioner_key",
        {
            "id": id,
            "organization_id": organization_id,
            "name": name,
            "key_hash": key_hash,
            "tags": jsonb(dict(tags)),
            "now": now,
        },
    )
    return _key(_returned(row, "auth.insert_provisioner_key"))


async def provisioner_key_by_hash(conn: Conn, key_hash: bytes) -> ProvisionerKey | None:
    row = await fetch_one(conn, "auth.provisioner_key_by_hash", {"key_hash": key_hash})
    return None if row is None else _key(row)


async def provisioner_keys(conn: Conn, organization_id: UUID) -> list[ProvisionerKey]:
    rows = await fetch_all(conn, "auth.provisioner_keys", {"organization_id": organization_id})
    return [_key(row) for row in rows]


async def revoke_provisioner_key(
    conn: Conn, *, organization_id: UUID, key: str, now: datetime
) -> UUID | None:
    """The id of the active key named ``key`` (its id or its name), now revoked; None when there is none."""
    key_id: UUID | None = await fetch_val(
        conn, "auth.revoke_provisioner_key", {"organization_id": organization_id, "key": key, "now": now}
    )
    return key_id


async def provisioner_key_active(conn: Conn, key_id: UUID) -> bool:
    return await fetch_one(conn, "auth.provisioner_key_active", {"id": key_id}) is not None


# -- agent tokens ------------------------------------------------------------------------------------------


async def agent_by_token(conn: Conn, token_hash: bytes) -> Agent | None:
    row = await fetch_one(conn, "agents.by_token", {"token_hash": token_hash})
    return None if row is None else Agent(**row)


def _returned(row: dict[str, Any] | None, query: str) -> dict[str, Any]:
    """The row an INSERT ... RETURNING gave back; it always gives one, or raises."""
    if row is None:
        raise RuntimeError(f"{query} returned no row")
    return row
