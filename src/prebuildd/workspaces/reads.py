"""Reading workspaces and builds as people see them: lists with each workspace's latest build, one workspace,
its builds, one build. Shared by the HTTP API and other surfaces; every write goes through the builder."""

from __future__ import annotations

from uuid import UUID

from prebuildd.store.db import Database, Row, fetch_all, fetch_one


async def list_workspaces(
    db: Database,
    *,
    organization_id: UUID,
    owner_id: UUID | None = None,
    template: str | None = None,
    name: str | None = None,
) -> list[Row]:
    """Live workspaces of an organization with their latest build, by owner then name; None filters nothing."""
    async with db.transaction() as conn:
        return await fetch_all(
            conn,
            "api.workspaces",
            {"organization_id": organization_id, "owner_id": owner_id, "template": template, "name": name},
        )


async def workspace_by_id(db: Database, workspace_id: UUID) -> Row | None:
    """One workspace, deleted or not, with its latest build and its organization."""
    async with db.transaction() as conn:
        return await fetch_one(conn, "api.workspace_by_id", {"id": workspace_id})


async def builds_of_workspace(db: Database, workspace_id: UUID) -> list[Row]:
    """Every build of a workspace, newest first."""
    async with db.transaction() as conn:
        return await fetch_all(conn, "api.builds_of_workspace", {"workspace_id": workspace_id})


async def build_by_id(db: Database, build_id: UUID) -> Row | None:
    """One build with its workspace's owner and organization."""
    async with db.transaction() as conn:
        return await fetch_one(conn, "api.build_by_id", {"id": build_id})
