"""Organizations, the tenants: the site owner creates, renames and deletes them; anyone lists their own.

An organization still holding templates or workspaces is not deleted (the refusal names what is left); a
deleted one keeps its row for the history that names it, and its name is free again.
"""

from __future__ import annotations

import re
from uuid import uuid4

from prebuildd.domain.errors import ErrorCode, PrebuilddError, not_found
from prebuildd.domain.permissions import Action
from prebuildd.identity.audit import AuditContext, Target, record
from prebuildd.identity.users import memberships, require
from prebuildd.runtime.clock import Clock
from prebuildd.store import identity as store
from prebuildd.store.db import Database
from prebuildd.store.errors import StoreConflict
from prebuildd.store.identity import Membership, Organization, User

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SHOWN_LEFTOVERS = 10


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise PrebuilddError(
            ErrorCode.INVALID_REQUEST,
            f"name: invalid organization name {name!r}: lowercase letters, digits and '-' (max 63)",
        )


async def create_organization(
    db: Database,
    clock: Clock,
    actor: User,
    *,
    name: str,
    display_name: str = "",
    audit: AuditContext | None = None,
) -> Organization:
    if audit is not None:
        audit.about("organization", name)
    require(actor, Action.ORGS_MANAGE)
    _check_name(name)
    try:
        async with db.transaction() as conn:
            org = await store.insert_organization(
                conn, id=uuid4(), name=name, display_name=display_name, is_default=False, now=clock.now()
            )
            await record(conn, audit, "org.create", Target("organization", org.name, org.id, org.id))
            return org
    except StoreConflict:
        raise PrebuilddError(ErrorCode.CONFLICT, f"organization {name} already exists") from None


async def visible_organizations(db: Database, actor: User) -> list[Membership]:
    """The site owner: every organization (with their role where they are a member, else ``owner``, the role
    they act with there). Anyone else: the organizations they belong to."""
    joined = await memberships(db, actor)
    if not actor.site_owner:
        return joined
    roles = {m.organization.id: m.role for m in joined}
    async with db.transaction() as conn:
        every = await store.organizations(conn)
    return [Membership(org, roles.get(org.id, "owner")) for org in every]


async def organization_named(db: Database, actor: User, name: str) -> Membership:
    """One organization the actor may see (by name or id); 404 otherwise."""
    for membership in await visible_organizations(db, actor):
        if name in (membership.organization.name, str(membership.organization.id)):
            return membership
    raise not_found(f"organization {name}")


async def update_organization(
    db: Database,
    actor: User,
    name: str,
    *,
    new_name: str | None,
    display_name: str | None,
    audit: AuditContext | None = None,
) -> Organization:
    if audit is not None:
        audit.about("organization", name)
    require(actor, Action.ORGS_MANAGE)
    found = await organization_named(db, actor, name)
    org = found.organization
    if audit is not None:
        audit.about("organization", org.name, org.id, org.id)
    if new_name is not None:
        _check_name(new_name)
    try:
        async with db.transaction() as conn:
            updated = await store.update_organization(
                conn, found.organization.id, new_name=new_name, display_name=display_name
            )
            if updated is not None:
                detail = {"from": org.name, "to": updated.name, "display_name": updated.display_name}
                target = Target("organization", updated.name, org.id, org.id)
                await record(conn, audit, "org.rename", target, detail=detail)
    except StoreConflict:
        raise PrebuilddError(ErrorCode.CONFLICT, f"organization {new_name} already exists") from None
    if updated is None:
        raise not_found(f"organization {name}")
    return updated


async def delete_organization(
    db: Database, clock: Clock, actor: User, name: str, *, audit: AuditContext | None = None
) -> None:
    """Delete an organization with nothing left in it (refused naming what is left); never the default one."""
    if audit is not None:
        audit.about("organization", name)
    require(actor, Action.ORGS_MANAGE)
    org = (await organization_named(db, actor, name)).organization
    if audit is not None:
        audit.about("organization", org.name, org.id, org.id)
    if org.is_default:
        raise PrebuilddError(
            ErrorCode.CONFLICT, f"organization {org.name} is the default organization: it cannot be deleted"
        )
    async with db.transaction() as conn:
        left = await store.organization_leftovers(conn, org.id)
        if left:
            raise PrebuilddError(ErrorCode.CONFLICT, _leftovers_message(org.name, left))
        if not await store.delete_organization(conn, org.id, clock.now()):
            raise not_found(f"organization {name}")
        await record(conn, audit, "org.delete")


def _leftovers_message(name: str, left: list[tuple[str, str]]) -> str:
    parts = []
    for kind in ("template", "workspace"):
        names = [n for k, n in left if k == kind]
        if names:
            shown = ", ".join(names[:_SHOWN_LEFTOVERS])
            more = f" and {len(names) - _SHOWN_LEFTOVERS} more" if len(names) > _SHOWN_LEFTOVERS else ""
            parts.append(f"{len(names)} {kind}(s) ({shown}{more})")
    return (
        f"organization {name} still has {' and '.join(parts)}: delete them first "
        "(deleting a template removes its prebuilds)"
    )
