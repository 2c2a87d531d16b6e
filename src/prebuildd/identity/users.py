"""Organizations and users: the default organization, people who own workspaces, their roles and suspension.

The rules about users live here: names and roles are checked on creation, a taken name is a conflict, and no
change may leave the server without an active owner.
"""

from __future__ import annotations

import re
from uuid import UUID, uuid4

from prebuildd.domain.errors import ErrorCode, PrebuilddError, not_found
from prebuildd.domain.identity import ROLES
from prebuildd.runtime.clock import Clock
from prebuildd.store import identity as store
from prebuildd.store.db import Database
from prebuildd.store.errors import StoreConflict
from prebuildd.store.identity import Organization, User

__all__ = ["DEFAULT_ORGANIZATION", "ROLE_RANK", "Organization", "User"]

DEFAULT_ORGANIZATION = "default"
_USERNAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")

ROLE_RANK = {"member": 0, "template-admin": 1, "owner": 2}
"""Each role may do what the roles below it may."""


def has_role(user: User, role: str) -> bool:
    """Whether ``user``'s role is ``role`` or above it."""
    return ROLE_RANK[user.role] >= ROLE_RANK[role]


def is_site_owner(user: User) -> bool:
    """Whether ``user`` may see site-wide operator data (``/metrics``). Until organizations carry their own
    roles, an ``owner`` is the site's owner; this is the one place that decides it."""
    return has_role(user, "owner")


async def ensure_default_organization(db: Database, clock: Clock) -> Organization:
    async with db.transaction() as conn:
        org = await store.default_organization(conn)
        if org is not None:
            return org
        return await store.insert_organization(
            conn,
            id=uuid4(),
            name=DEFAULT_ORGANIZATION,
            display_name="Default",
            is_default=True,
            now=clock.now(),
        )


async def first_owner(db: Database) -> User | None:
    """The oldest owner (None before the first start has created one)."""
    async with db.transaction() as conn:
        return await store.first_owner(conn)


async def create_user(
    db: Database,
    clock: Clock,
    *,
    username: str,
    role: str = "member",
    email: str = "",
    organization_id: UUID | None = None,
) -> User:
    """Create a user, member of ``organization_id`` (the default organization when None)."""
    if not _USERNAME.match(username):
        raise ValueError(f"invalid username {username!r}: use letters, digits, '.', '_' and '-' (max 63)")
    if role not in ROLES:
        raise ValueError(f"invalid role {role!r}: expected one of {', '.join(ROLES)}")
    org_id = organization_id or (await ensure_default_organization(db, clock)).id
    async with db.transaction() as conn:
        user = await store.insert_user(
            conn, id=uuid4(), username=username, email=email, role=role, now=clock.now()
        )
        await store.add_member(conn, organization_id=org_id, user_id=user.id, now=clock.now())
    return user


async def remove_user(db: Database, user_id: UUID) -> None:
    """Delete a user and their tokens and memberships: only for one nobody has used yet (the owner of a first
    start that failed before its token was handed out)."""
    async with db.transaction() as conn:
        await store.delete_user(conn, user_id)


async def add_user(db: Database, clock: Clock, actor: User, *, username: str, role: str, email: str) -> User:
    """A new user in the actor's organization; a taken name is a conflict."""
    organization_id = await organization_of(db, actor)
    try:
        return await create_user(
            db, clock, username=username, role=role, email=email, organization_id=organization_id
        )
    except StoreConflict:
        raise PrebuilddError(ErrorCode.CONFLICT, f"username {username} is taken") from None


async def list_users(db: Database) -> list[User]:
    """Every real user (not the built-in prebuilds user), by name."""
    async with db.transaction() as conn:
        return await store.users(conn)


async def update_user(
    db: Database, clock: Clock, username: str, *, role: str | None, suspended: bool | None
) -> User:
    """Change a user's role or suspension; refused when it would leave no active owner."""
    target = await user_named(db, username)
    async with db.transaction() as conn:
        await store.lock_active_owners(conn)
        updated = await store.update_user(conn, id=target.id, role=role, suspended=suspended, now=clock.now())
        if updated is None:
            raise not_found(f"user {username}")
        if await store.active_owner_count(conn) == 0:
            raise PrebuilddError(
                ErrorCode.CONFLICT,
                f"refused: {username} is the last active owner; make another user owner first",
            )
    return updated


async def user_named(db: Database, username: str, *, system_too: bool = False) -> User:
    """A user by name, or 404; the prebuilds system user only with ``system_too``."""
    async with db.transaction() as conn:
        user = await store.user_by_name(conn, username)
    if user is None or (user.is_system and not system_too):
        raise not_found(f"user {username}")
    return user


async def organization_of(db: Database, user: User) -> UUID:
    """The organization ``user`` acts in; a user in none is refused."""
    async with db.transaction() as conn:
        organization_id = await store.organization_of_user(conn, user.id)
    if organization_id is None:
        raise PrebuilddError(ErrorCode.FORBIDDEN, f"user {user.username} belongs to no organization")
    return organization_id
