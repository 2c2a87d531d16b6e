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
    """A person (or the built-in prebuilds user, ``is_system``) who owns workspaces; fields in column order.

    ``role`` and ``organization_id`` are the user's membership in the organization the user was read for (the
    one a request acts in); a user read for no organization has an empty role and no organization.
    """

    id: UUID
    username: str
    email: str
    role: str
    is_system: bool
    suspended: bool
    created_at: datetime
    updated_at: datetime
    site_owner: bool = False
    organization_id: UUID | None = None


@dataclass(frozen=True)
class Membership:
    """An organization a user belongs to, with the user's role in it."""

    organization: Organization
    role: str


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
    memberships: tuple[Membership, ...] | None = None
    """The user's live organizations, read with the token (None: not read)."""
    default_organization: Organization | None = None
    """For the site owner: the default organization, read with the token."""


@dataclass(frozen=True)
class ProvisionerKey:
    """A key standalone provisioner daemons authenticate with; ``tags`` are what its daemons may offer."""

    id: UUID
    organization_id: UUID | None
    """None: a site-wide key, serving every organization."""
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
        row["site_owner"],
        row["organization_id"],
    )


def _org(row: Mapping[str, Any]) -> Organization:
    return Organization(row["id"], row["name"], row["display_name"], row["is_default"], row["created_at"])


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


async def organization_by_name(conn: Conn, name: str) -> Organization | None:
    """A live organization by name or id."""
    row = await fetch_one(conn, "identity.organization_by_name", {"name": name})
    return None if row is None else _org(row)


async def organizations(conn: Conn) -> list[Organization]:
    return [_org(row) for row in await fetch_all(conn, "identity.organizations")]


async def memberships_of_user(conn: Conn, user_id: UUID) -> list[Membership]:
    rows = await fetch_all(conn, "identity.memberships_of_user", {"user_id": user_id})
    return [Membership(_org(row), row["role"]) for row in rows]


async def update_organization(
    conn: Conn, id: UUID, *, new_name: str | None, display_name: str | None
) -> Organization | None:
    row = await fetch_one(
        conn,
        "identity.update_organization",
        {"id": id, "new_name": new_name, "display_name": display_name},
    )
    return None if row is None else _org(row)


async def organization_leftovers(conn: Conn, id: UUID) -> list[tuple[str, str]]:
    """(kind, name) of the live templates and workspaces of the organization."""
    return [
        (row["kind"], row["name"])
        for row in await fetch_all(conn, "identity.organization_leftovers", {"id": id})
    ]


async def delete_organization(conn: Conn, id: UUID, now: datetime) -> bool:
    """Whether the (non-default, live) organization was marked deleted."""
    return await fetch_one(conn, "identity.delete_organization", {"id": id, "now": now}) is not None


async def insert_user(
    conn: Conn, *, id: UUID, username: str, email: str, site_owner: bool, now: datetime
) -> User:
    row = await fetch_one(
        conn,
        "identity.insert_user",
        {"id": id, "username": username, "email": email, "site_owner": site_owner, "now": now},
    )
    return _user(_returned(row, "identity.insert_user"))


async def add_member(conn: Conn, *, organization_id: UUID, user_id: UUID, role: str, now: datetime) -> None:
    """Make the user a member with ``role``, or change the role of a member."""
    await execute(
        conn,
        "identity.add_member",
        {"organization_id": organization_id, "user_id": user_id, "role": role, "now": now},
    )


async def remove_member(conn: Conn, *, organization_id: UUID, user_id: UUID) -> bool:
    row = await fetch_one(
        conn, "identity.remove_member", {"organization_id": organization_id, "user_id": user_id}
    )
    return row is not None


async def delete_user(conn: Conn, user_id: UUID) -> None:
    await execute(conn, "identity.delete_user", {"id": user_id})


async def member_by_name(conn: Conn, organization_id: UUID, username: str) -> User | None:
    """A member of the organization, as in that organization (with their role there)."""
    row = await fetch_one(
        conn, "identity.member_by_name", {"organization_id": organization_id, "username": username}
    )
    return None if row is None else _user(row)


async def user_by_name(conn: Conn, username: str) -> User | None:
    """A user in no organization's view: for the site owner and for the system user only."""
    row = await fetch_one(conn, "identity.user_by_name", {"username": username})
    return None if row is None else _user(row)


async def first_owner(conn: Conn) -> User | None:
    row = await fetch_one(conn, "identity.first_owner")
    return None if row is None else _user(row)


async def members(conn: Conn, organization_id: UUID) -> list[User]:
    return await fetch_all_as(conn, "identity.members", {"organization_id": organization_id}, User)


async def lock_owners(conn: Conn) -> None:
    await fetch_all(conn, "identity.lock_owners")


async def orphaned_organizations(conn: Conn, organization_ids: list[UUID]) -> list[str]:
    rows = await fetch_all(conn, "identity.orphaned_organizations", {"ids": organization_ids})
    return [row["name"] for row in rows]


async def owned_organization_ids(conn: Conn, user_id: UUID) -> list[UUID]:
    rows = await fetch_all(conn, "identity.owned_organization_ids", {"user_id": user_id})
    return [row["organization_id"] for row in rows]


async def active_site_owner_count(conn: Conn) -> int:
    return int(await fetch_val(conn, "identity.active_site_owner_count"))


async def set_suspended(conn: Conn, *, id: UUID, suspended: bool, now: datetime) -> bool:
    row = await fetch_one(conn, "identity.set_suspended", {"id": id, "suspended": suspended, "now": now})
    return row is not None


async def unadministered_memberships(conn: Conn, *, actor_id: UUID, target_id: UUID) -> int:
    return int(
        await fetch_val(
            conn, "identity.unadministered_memberships", {"actor_id": actor_id, "target_id": target_id}
        )
    )


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
    row = await fetch_one(conn, "auth.user_by_token", {"token_hash": token_hash, "now": now}, prepare=True)
    if row is None:
        return None
    default = row["default_organization"]
    return TokenHolder(
        _user(row),
        row["token_id"],
        row["token_last_used_at"],
        tuple(Membership(_json_org(m), m["role"]) for m in row["memberships"]),
        _json_org(default) if default is not None else None,
    )


def _json_org(value: Mapping[str, Any]) -> Organization:
    """An organization as ``json_build_object`` gives it (ids and times as text)."""
    return Organization(
        UUID(value["id"]),
        value["name"],
        value["display_name"],
        value["is_default"],
        datetime.fromisoformat(value["created_at"]),
    )


async def touch_token(conn: Conn, token_id: UUID, now: datetime, since: datetime) -> None:
    """Set the token's last use to ``now`` unless a use after ``since`` is already recorded."""
    await execute(conn, "auth.touch_token", {"id": token_id, "now": now, "since": since})


async def tokens_of_user(conn: Conn, user_id: UUID) -> list[Token]:
    return await fetch_all_as(conn, "auth.tokens_of_user", {"user_id": user_id}, Token)


async def token_holder(conn: Conn, token_id: UUID) -> UUID | None:
    """The user whose active token this is; None when there is no such active token."""
    user_id: UUID | None = await fetch_val(conn, "auth.token_holder", {"id": token_id})
    return user_id


async def revoke_token(conn: Conn, *, id: UUID, user_id: UUID, now: datetime) -> bool:
    """Whether an active token of ``user_id`` was revoked."""
    row = await fetch_one(conn, "auth.revoke_token", {"id": id, "user_id": user_id, "now": now})
    return row is not None


# -- provisioner keys --------------------------------------------------------------------------------------


async def insert_provisioner_key(
    conn: Conn,
    *,
    id: UUID,
    organization_id: UUID | None,
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


async def provisioner_keys(conn: Conn, organization_id: UUID | None) -> list[ProvisionerKey]:
    rows = await fetch_all(conn, "auth.provisioner_keys", {"organization_id": organization_id})
    return [_key(row) for row in rows]


async def revoke_provisioner_key(
    conn: Conn, *, organization_id: UUID | None, key: str, now: datetime
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
