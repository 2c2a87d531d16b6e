"""What routes look up before they act: the caller's organization, a template by name, a workspace or build the
caller may see. Anything the caller may not see is a 404, exactly like something that does not exist."""

from __future__ import annotations

from uuid import UUID

from prebuildd.api.deps import has_role
from prebuildd.domain.errors import ErrorCode, PrebuilddError, not_found
from prebuildd.services import Services
from prebuildd.store.db import Row, fetch_one
from prebuildd.store.workspaces import BuildView, WorkspaceView
from prebuildd.workspaces.reads import build_by_id, workspace_by_id


async def organization_of(services: Services, user: Row) -> UUID:
    async with services.db.transaction() as conn:
        row = await fetch_one(conn, "auth.organization_of_user", {"user_id": user["id"]})
    if row is None:
        raise PrebuilddError(ErrorCode.FORBIDDEN, f"user {user['username']} belongs to no organization")
    organization_id: UUID = row["organization_id"]
    return organization_id


async def user_named(services: Services, username: str, *, system_too: bool = False) -> Row:
    """A user by name, or 404; the prebuilds system user only with ``system_too``."""
    async with services.db.transaction() as conn:
        row = await fetch_one(conn, "identity.user_by_name", {"username": username})
    if row is None or (row["is_system"] and not system_too):
        raise not_found(f"user {username}")
    return row


async def template_named(services: Services, organization_id: UUID, name: str) -> Row:
    """The live template ``name`` (with ``active_version``, its name); 404 when there is none."""
    async with services.db.transaction() as conn:
        row = await fetch_one(
            conn, "api.template_by_name", {"organization_id": organization_id, "name": name}
        )
    if row is None:
        raise not_found(f"template {name}")
    return row


def may_act_for(user: Row, owner_id: UUID) -> bool:
    """Members act on their own workspaces; template admins and owners on everyone's."""
    return bool(user["id"] == owner_id) or has_role(user, "template-admin")


async def visible_workspace(services: Services, user: Row, workspace_id: UUID) -> WorkspaceView:
    """The workspace (deleted ones too) if the caller may see it, else 404."""
    workspace = await workspace_by_id(services.db, workspace_id)
    if workspace is None or not may_act_for(user, workspace.owner_id):
        raise not_found(f"workspace {workspace_id}")
    if workspace.organization_id != await organization_of(services, user):
        raise not_found(f"workspace {workspace_id}")
    return workspace


async def visible_build(services: Services, user: Row, build_id: UUID) -> BuildView:
    """The build if the caller may see its workspace, else 404."""
    found = await build_by_id(services.db, build_id)
    if found is None or not may_act_for(user, found.owner_id):
        raise not_found(f"build {build_id}")
    if found.organization_id != await organization_of(services, user):
        raise not_found(f"build {build_id}")
    return found.build
