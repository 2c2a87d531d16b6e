"""Reading workspaces and builds as people see them: lists with each workspace's latest build, one workspace,
its builds, one build, a build's log lines. Shared by the HTTP API and other surfaces; every write goes through
the builder."""

from __future__ import annotations

from uuid import UUID

from prebuildd.store import jobs
from prebuildd.store import workspaces as store
from prebuildd.store.db import Database
from prebuildd.store.jobs import JobLogLine
from prebuildd.store.workspaces import BuildView, OwnedBuild, WorkspaceView


async def list_workspaces(
    db: Database,
    *,
    organization_id: UUID,
    owner_id: UUID | None = None,
    template: str | None = None,
    name: str | None = None,
) -> list[WorkspaceView]:
    """Live workspaces of an organization with their latest build, by owner then name; None filters nothing."""
    async with db.transaction() as conn:
        return await store.list_workspaces(
            conn, organization_id=organization_id, owner_id=owner_id, template=template, name=name
        )


async def workspace_by_id(db: Database, workspace_id: UUID) -> WorkspaceView | None:
    """One workspace, deleted or not, with its latest build and its organization (one statement, autocommit: every
    creation reads its workspace back)."""
    async with db.autocommit() as conn:
        return await store.workspace_view(conn, workspace_id)


async def builds_of_workspace(db: Database, workspace_id: UUID) -> list[BuildView]:
    """Every build of a workspace, newest first."""
    async with db.transaction() as conn:
        return await store.builds_of_workspace(conn, workspace_id)


async def build_by_id(db: Database, build_id: UUID) -> OwnedBuild | None:
    """One build with its workspace's owner and organization."""
    async with db.transaction() as conn:
        return await store.build_view(conn, build_id)


async def build_log_lines(db: Database, job_id: UUID, *, after: int, limit: int) -> list[JobLogLine]:
    """A page of a build job's log lines after line ``after``."""
    async with db.transaction() as conn:
        return await jobs.logs_after(conn, job_id, after, limit)
