"""Organizations' members: people who own workspaces, their role in each organization, their suspension, and the
organization a request acts in.

The rules about users live here: names and roles are checked on creation, a taken name is a conflict, a caller
sees and changes only the users of the organization it acts in, and no change may leave an organization without
an active owner nor the site without an active site owner.
"""

from __future__ import annotations

import dataclasses
import re
from uuid import UUID, uuid4

from prebuildd.domain.errors import ErrorCode, PrebuilddError, not_found
from prebuildd.domain.permissions import LEAST_ROLE, ROLE_RANK, ROLES, SITE, Action, allows, has_rank
from prebuildd.identity.audit import AuditContext, Target, record
from prebuildd.runtime.clock import Clock
from prebuildd.store import identity as store
from prebuildd.store.db import Conn, Database
from prebuildd.store.errors import StoreConflict
from prebuildd.store.identity import Membership, Organization, TokenHolder, User

__all__ = ["DEFAULT_ORGANIZATION", "ROLE_RANK", "Membership", "Organization", "User"]

DEFAULT_ORGANIZATION = "default"
_USERNAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


def has_role(user: User, role: str) -> bool:
    """Whether ``user``'s role in the organization it acts in is ``role`` or above (the site owner: always)."""
    return user.site_owner or has_rank(user.role, role)


def may(user: User, action: Action) -> bool:
    """Whether ``user`` may do ``action`` in the organization it acts in (the table in ``domain.permissions``)."""
    return allows(user.role, action, site_owner=user.site_owner)


def require(user: User, action: Action) -> None:
    """Refuse (403) unless ``user`` may do ``action``."""
    if not may(user, action):
        needed = LEAST_ROLE[action]
        what = "the site owner" if needed == SITE else f"the {needed} role"
        raise PrebuilddError(
            ErrorCode.FORBIDDEN, f"{action} needs {what}; you are {user.role or 'not a member'} here"
        )


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise PrebuilddError(
            ErrorCode.INVALID_REQUEST, f"role: invalid role {role!r}: expected one of {', '.join(ROLES)}"
        )


def is_site_owner(user: User) -> bool:
    """Whether ``user`` may see site-wide operator data (``/metrics``): the site owner only, not an owner of one
    organization. The one place that decides it."""
    return user.site_owner


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
    """The oldest site owner (None before the first start has created one)."""
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
    site_owner: bool = False,
    audit: AuditContext | None = None,
) -> User:
    """Create a user with ``role`` in ``organization_id`` (the default organization when None); the user is
    returned as a member of that organization."""
    if not _USERNAME.match(username):
        raise ValueError(f"invalid username {username!r}: use letters, digits, '.', '_' and '-' (max 63)")
    if role not in ROLES:
        raise ValueError(f"invalid role {role!r}: expected one of {', '.join(ROLES)}")
    org_id = organization_id or (await ensure_default_organization(db, clock)).id
    async with db.transaction() as conn:
        user = await store.insert_user(
            conn, id=uuid4(), username=username, email=email, site_owner=site_owner, now=clock.now()
        )
        await store.add_member(conn, organization_id=org_id, user_id=user.id, role=role, now=clock.now())
        await record(
            conn,
            audit,
            "user.create",
            type="user",
            name=user.username,
            id=user.id,
            organization_id=org_id,
            detail={"role": role, "site_owner": site_owner},
        )
    return dataclasses.replace(user, role=role, organization_id=org_id)


async def remove_user(db: Database, user_id: UUID) -> None:
    """Delete a user and their tokens and memberships: only for one nobody has used yet (the owner of a first
    start that failed before its token was handed out)."""
    async with db.transaction() as conn:
        await store.delete_user(conn, user_id)


async def add_user(
    db: Database,
    clock: Clock,
    actor: User,
    *,
    username: str,
    role: str,
    email: str,
    audit: AuditContext | None = None,
) -> User:
    """A new user in the actor's organization; a taken name is a conflict."""
    require(actor, Action.USERS_MANAGE)
    _check_role(role)
    organization_id = await organization_of(db, actor)
    if audit is not None:
        audit.about("user", username, organization_id=organization_id)
    try:
        return await create_user(
            db,
            clock,
            username=username,
            role=role,
            email=email,
            organization_id=organization_id,
            audit=audit,
        )
    except StoreConflict:
        raise PrebuilddError(ErrorCode.CONFLICT, f"username {username} is taken") from None


async def list_users(db: Database, actor: User) -> list[User]:
    """The members of the actor's organization (not the built-in prebuilds user), by name."""
    organization_id = await organization_of(db, actor)
    async with db.transaction() as conn:
        return await store.members(conn, organization_id)


async def administers(db: Database, actor: User, target: User) -> bool:
    """Whether ``actor`` may act on ``target`` beyond one organization (their tokens, their suspension): the
    site owner may; an owner may when every organization of the target is one the actor owns."""
    if actor.site_owner:
        return True
    if target.site_owner:
        return False
    async with db.transaction() as conn:
        return await store.unadministered_memberships(conn, actor_id=actor.id, target_id=target.id) == 0


async def update_user(
    db: Database,
    clock: Clock,
    actor: User,
    username: str,
    *,
    role: str | None,
    suspended: bool | None,
    audit: AuditContext | None = None,
) -> User:
    """Change a member's role in the actor's organization, or suspend them (everywhere: only when the actor
    administers all their organizations); refused when it would leave an organization without an active
    owner, or the site without an active site owner. Each change that really changes something is one audit
    entry (``user.role``, ``user.suspend``, ``user.unsuspend``)."""
    if audit is not None:
        audit.about("user", username, organization_id=actor.organization_id)
    require(actor, Action.USERS_MANAGE)
    organization_id = await organization_of(db, actor)
    target = await user_named(db, organization_id, username)
    about = Target("user", target.username, target.id, organization_id)
    if audit is not None:
        audit.target = about
    if role is not None:
        _check_role(role)
    if suspended is not None and not await administers(db, actor, target):
        raise PrebuilddError(
            ErrorCode.FORBIDDEN,
            f"{username} also belongs to organizations you do not own: only the site owner suspends them",
        )
    now = clock.now()
    async with db.transaction() as conn:
        await store.lock_owners(conn)
        if role is not None:
            await store.add_member(
                conn, organization_id=organization_id, user_id=target.id, role=role, now=now
            )
        if suspended is not None:
            await store.set_suspended(conn, id=target.id, suspended=suspended, now=now)
        await _check_owners_left(conn, target, username)
        updated = await store.member_by_name(conn, organization_id, username)
        if role is not None and role != target.role:
            await record(conn, audit, "user.role", about, detail={"from": target.role, "to": role})
        if suspended is not None and suspended != target.suspended:
            await record(conn, audit, "user.suspend" if suspended else "user.unsuspend", about)
    if updated is None:
        raise not_found(f"user {username}")
    return updated


async def _check_owners_left(conn: Conn, target: User, username: str) -> None:
    """Inside the change's transaction (with ``lock_owners`` held): refuse it if it orphaned something."""
    ids = [m.organization.id for m in await store.memberships_of_user(conn, target.id)]
    if target.organization_id is not None:
        ids.append(target.organization_id)
    orphaned = await store.orphaned_organizations(conn, ids)
    if orphaned:
        raise PrebuilddError(
            ErrorCode.CONFLICT,
            f"refused: {username} is the last active owner of {', '.join(orphaned)}; make another user owner first",
        )
    if await store.active_site_owner_count(conn) == 0:
        raise PrebuilddError(ErrorCode.CONFLICT, f"refused: {username} is the last active site owner")


async def set_member(
    db: Database,
    clock: Clock,
    actor: User,
    username: str,
    role: str,
    *,
    audit: AuditContext | None = None,
) -> User:
    """Add a user to the actor's organization with ``role``, or change a member's role. Adding someone who is
    not yet a member needs the site owner, or an owner who administers all their organizations: anyone else
    gets a 404, as for a user who does not exist. Audited as ``member.add``, or ``member.role`` for a member
    whose role changed."""
    if audit is not None:
        audit.about("user", username, organization_id=actor.organization_id)
    require(actor, Action.USERS_MANAGE)
    _check_role(role)
    organization_id = await organization_of(db, actor)
    async with db.transaction() as conn:
        target = await store.member_by_name(conn, organization_id, username)
        if target is None:
            found = await store.user_by_name(conn, username)
            if found is None or found.is_system:
                raise not_found(f"user {username}")
            target = found
    if target.organization_id is None and not await administers(db, actor, target):
        raise not_found(f"user {username}")
    async with db.transaction() as conn:
        await store.lock_owners(conn)
        await store.add_member(
            conn, organization_id=organization_id, user_id=target.id, role=role, now=clock.now()
        )
        await _check_owners_left(conn, target, username)
        updated = await store.member_by_name(conn, organization_id, username)
        about = Target("user", target.username, target.id, organization_id)
        if target.organization_id is None:
            await record(conn, audit, "member.add", about, detail={"role": role})
        elif target.role != role:
            await record(conn, audit, "member.role", about, detail={"from": target.role, "to": role})
    if updated is None:
        raise not_found(f"user {username}")
    return updated


async def remove_member(
    db: Database, actor: User, username: str, *, audit: AuditContext | None = None
) -> None:
    """Take a member out of the actor's organization; refused when it would leave the organization without an
    active owner. Their tokens stay: they still work in the user's other organizations."""
    if audit is not None:
        audit.about("user", username, organization_id=actor.organization_id)
    require(actor, Action.USERS_MANAGE)
    organization_id = await organization_of(db, actor)
    target = await user_named(db, organization_id, username)
    async with db.transaction() as conn:
        await store.lock_owners(conn)
        await store.remove_member(conn, organization_id=organization_id, user_id=target.id)
        await _check_owners_left(conn, target, username)
        about = Target("user", target.username, target.id, organization_id)
        await record(conn, audit, "member.remove", about, detail={"role": target.role})


async def user_named(db: Database, organization_id: UUID, username: str, *, system_too: bool = False) -> User:
    """A member of the organization by name, or 404 (a user of another organization too: names are not
    probed across organizations); the prebuilds system user only with ``system_too``."""
    async with db.transaction() as conn:
        user = await store.member_by_name(conn, organization_id, username)
        if user is None and system_too:
            found = await store.user_by_name(conn, username)
            user = found if found is not None and found.is_system else None
    if user is None:
        raise not_found(f"user {username}")
    return user


async def organization_of(db: Database, user: User) -> UUID:
    """The organization ``user`` acts in: the request's, else their only organization."""
    if user.organization_id is not None:
        return user.organization_id
    return (await acting_user(db, user, None)).organization_id or _no_org(user)


def _no_org(user: User) -> UUID:
    raise PrebuilddError(ErrorCode.FORBIDDEN, f"user {user.username} belongs to no organization")


async def memberships(db: Database, user: User) -> list[Membership]:
    async with db.transaction() as conn:
        return await store.memberships_of_user(conn, user.id)


async def acting_user(
    db: Database,
    user: User,
    organization: str | None,
    *,
    needed: bool = True,
    known: TokenHolder | None = None,
) -> User:
    """``user`` as a member of the organization a request names (by name or id), with their role there.

    Without a name, the user's only organization (the site owner: the default organization). The site owner acts as an owner in every organization. An organization the user does not belong to
    is a 404, like one that does not exist; a user of several organizations who names none is asked to
    (unless not ``needed``: the routes about organizations themselves then get the user in none).
    """
    if organization is None and known is not None and known.memberships is not None:
        # Read with the token (one statement for both): the request's organization costs no round trip.
        return _in_own_organization(user, list(known.memberships), known.default_organization, needed)
    # Autocommit: reads only, each a statement of its own (no BEGIN/COMMIT round trips on every request).
    async with db.autocommit() as conn:
        joined = await store.memberships_of_user(conn, user.id)
        if organization is not None:
            org = await store.organization_by_name(conn, organization)
            role = next((m.role for m in joined if org is not None and m.organization.id == org.id), "")
            if org is None or not (role or user.site_owner):
                raise not_found(f"organization {organization}")
            return dataclasses.replace(user, role=role or "owner", organization_id=org.id)
        default = await store.default_organization(conn) if user.site_owner else None
    return _in_own_organization(user, joined, default, needed)


def _in_own_organization(
    user: User, joined: list[Membership], default: Organization | None, needed: bool
) -> User:
    """``user`` in the organization a request acts in when it names none: the site owner's default one, else the
    user's only one."""
    if user.site_owner and default is not None:
        role = next((m.role for m in joined if m.organization.id == default.id), "owner")
        return dataclasses.replace(user, role=role, organization_id=default.id)
    if len(joined) == 1:
        return dataclasses.replace(user, role=joined[0].role, organization_id=joined[0].organization.id)
    if not needed:
        return user
    if not joined:
        raise PrebuilddError(ErrorCode.FORBIDDEN, f"user {user.username} belongs to no organization")
    names = ", ".join(m.organization.name for m in joined)
    raise PrebuilddError(
        ErrorCode.INVALID_REQUEST,
        f"you belong to several organizations ({names}): name one with the Prebuildd-Organization header "
        "(prebuildd: --org, or `prebuildd orgs use NAME`)",
    )
