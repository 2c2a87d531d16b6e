"""Organizations and users: the default organization and people who own workspaces."""

from __future__ import annotations

import re
from uuid import UUID, uuid4

from prebuildd.domain.identity import ROLES
from prebuildd.runtime.clock import Clock
from prebuildd.store.db import Database, Row, execute, fetch_one

DEFAULT_ORGANIZATION = "default"
_USERNAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


async def ensure_default_organization(db: Database, clock: Clock) -> Row:
    async with db.transaction() as conn:
        org = await fetch_one(conn, "identity.default_organization")
        if org is not None:
            return org
        org = await fetch_one(
            conn,
            "identity.insert_organization",
            {
                "id": uuid4(),
                "name": DEFAULT_ORGANIZATION,
                "display_name": "Default",
                "is_default": True,
                "now": clock.now(),
            },
        )
        assert org is not None
        return org


async def create_user(
    db: Database,
    clock: Clock,
    *,
    username: str,
    role: str = "member",
    email: str = "",
    organization_id: UUID | None = None,
) -> Row:
    """Create a user, member of ``organization_id`` (the default organization when None)."""
    if not _USERNAME.match(username):
        raise ValueError(f"invalid username {username!r}: use letters, digits, '.', '_' and '-' (max 63)")
    if role not in ROLES:
        raise ValueError(f"invalid role {role!r}: expected one of {', '.join(ROLES)}")
    org_id = organization_id or (await ensure_default_organization(db, clock))["id"]
    async with db.transaction() as conn:
        user = await fetch_one(
            conn,
            "identity.insert_user",
            {
                "id": uuid4(),
                "username": username,
                "email": email,
                "role": role,
                "now": clock.now(),
            },
        )
        assert user is not None
        await execute(
            conn,
            "identity.add_member",
            {
                "organization_id": org_id,
                "user_id": user["id"],
                "now": clock.now(),
            },
        )
    return user
