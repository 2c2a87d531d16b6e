"""What routes look up before they act: the caller's organization, a template by name, a workspace or build the
caller may see. Anything the caller may not see is a 404, exactly like something that does not exist."""

from __future__ import annotations

from uuid import UUID

from prebuildd.api.context import Services
from prebuildd.api.deps import may
from prebuildd.domain.errors import not_found
from prebuildd.domain.permissions import Action
from prebuildd.identity import users
from prebuildd.identity.users import User
from prebuildd.store.templates import Template
from prebuildd.store.workspaces import BuildView, WorkspaceView
from prebuildd.templates import catalog
from prebuildd.workspaces.reads import build_by_id, workspace_by_id


async def organization_of(services: Services, user: User) -> UUID:
    return await users.organization_of(services.db, user)


async def template_named(services: Services, organization_id: UUID, name: str) -> Template:
    """The live template ``name`` (with ``active_version``, its name); 404 when there is none."""
    return await catalog.template_named(services.db, organization_id, name)


def may_act_for(user: User, owner_id: UUID) -> bool:
    """Members act on their own workspaces; template admins and owners on everyone's."""
    return user.id == owner_id or may(user, Action.WORKSPACE_ANYONES)


async def visible_workspace(services: Services, user: User, workspace_id: UUID) -> WorkspaceView:
    """The workspace (deleted ones too) if the caller may see it, else 404."""
    workspace = await workspace_by_id(services.db, workspace_id)
    if workspace is None or not may_act_for(user, workspace.owner_id):
        raise not_found(f"workspace {workspace_id}")
    if workspace.organization_id != await organization_of(services, user):
        raise not_found(f"workspace {workspace_id}")
    return workspace


async def visible_build(services: Services, user: User, build_id: UUID) -> BuildView:
    """The build if the caller may see its workspace, else 404."""
    found = await build_by_id(services.db, build_id)
    if found is None or not may_act_for(user, found.owner_id):
        raise not_found(f"build {build_id}")
    if found.organization_id != await organization_of(services, user):
        raise not_found(f"build {build_id}")
    return found.build
