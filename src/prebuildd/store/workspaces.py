"""The workspace repository: workspaces, their builds and build log lines, as the builder writes them and as
people read them; and the template, version and preset facts the builder resolves a build against.

The builder's template reads use the statements of ``queries/templates.sql``; the views people read use
``queries/api.sql``, whose ``build_*`` columns make one converter serve a workspace's latest build and build lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from prebuildd.domain.jobs import BuildReason, JobStatus, Transition
from prebuildd.domain.parameters import ParameterSpec
from prebuildd.store.db import Conn
from prebuildd.store.rows import Row, execute, fetch_all, fetch_one, fetch_val, jsonb

# -- what the builder resolves against -----------------------------------------------------------------------


@dataclass(frozen=True)
class BuildTemplate:
    """A template as the builder sees it."""

    id: UUID
    organization_id: UUID
    name: str
    deleted: bool
    deprecated_at: datetime | None
    deprecation_message: str | None
    active_version_id: UUID | None


@dataclass(frozen=True)
class BuildVersion:
    """A template version with the status of its import job."""

    id: UUID
    template_id: UUID
    organization_id: UUID
    name: str
    provisioner: str
    tags: Mapping[str, str]
    import_status: JobStatus
    import_error: str | None


@dataclass(frozen=True)
class BuildPreset:
    id: UUID
    template_version_id: UUID
    parameters: Mapping[str, str]


@dataclass(frozen=True)
class LatestImport:
    """The newest version of a template and the status of its import."""

    version_name: str
    status: JobStatus


async def template_by_id(conn: Conn, template_id: UUID) -> BuildTemplate | None:
    row = await fetch_one(conn, "templates.template_by_id", {"id": template_id})
    if row is None:
        return None
    return BuildTemplate(
        id=row["id"],
        organization_id=row["organization_id"],
        name=row["name"],
        deleted=row["deleted"],
        deprecated_at=row["deprecated_at"],
        deprecation_message=row["deprecation_message"],
        active_version_id=row["active_version_id"],
    )


async def version_by_id(conn: Conn, version_id: UUID) -> BuildVersion | None:
    row = await fetch_one(conn, "templates.version_with_job", {"id": version_id})
    if row is None:
        return None
    return BuildVersion(
        id=row["id"],
        template_id=row["template_id"],
        organization_id=row["organization_id"],
        name=row["name"],
        provisioner=row["provisioner"],
        tags=dict(row["tags"]),
        import_status=JobStatus(row["import_status"]),
        import_error=row["import_error"],
    )


async def preset_by_id(conn: Conn, preset_id: UUID) -> BuildPreset | None:
    row = await fetch_one(conn, "templates.preset_by_id", {"id": preset_id})
    if row is None:
        return None
    return BuildPreset(
        id=row["id"], template_version_id=row["template_version_id"], parameters=row["parameters"]
    )


async def preset_id_by_name(conn: Conn, version_id: UUID, name: str) -> UUID | None:
    """The preset ``name`` (any case) of a version, as a creation names it."""
    row = await fetch_one(conn, "templates.preset_by_name", {"version_id": version_id, "name": name})
    return None if row is None else UUID(str(row["id"]))


async def preset_names(conn: Conn, version_id: UUID) -> list[str]:
    """The names of a version's presets, to say which exist when a creation names another."""
    return [
        str(row["name"])
        for row in await fetch_all(conn, "templates.version_presets", {"version_id": version_id})
    ]


async def latest_import(conn: Conn, template_id: UUID) -> LatestImport | None:
    row = await fetch_one(conn, "templates.latest_version_import_status", {"template_id": template_id})
    if row is None:
        return None
    return LatestImport(version_name=row["name"], status=JobStatus(row["job_status"]))


async def parameter_specs(conn: Conn, version_id: UUID) -> list[ParameterSpec]:
    """The declared parameters of a version, in declaration order."""
    rows = await fetch_all(conn, "templates.version_parameters", {"version_id": version_id})
    return [ParameterSpec.from_json(row["spec"]) for row in rows]


# -- workspaces and builds as the builder writes them --------------------------------------------------------


@dataclass(frozen=True)
class LockedWorkspace:
    """A workspace row, locked for the caller's transaction."""

    id: UUID
    name: str
    owner_id: UUID
    template_id: UUID
    deleted: bool


@dataclass(frozen=True)
class LastBuild:
    """A workspace's latest build with its job's status: what the next build continues from."""

    build_number: int
    transition: Transition
    job_status: JobStatus
    template_version_id: UUID
    preset_id: UUID | None
    parameters: Mapping[str, str]
    state: bytes | None


@dataclass(frozen=True)
class NewWorkspace:
    organization_id: UUID
    owner_id: UUID | None
    template_id: UUID
    name: str | None
    pool_preset_id: UUID | None
    """Set for a prebuild: the preset whose pool it joins (a claim clears it)."""


@dataclass(frozen=True)
class NewBuild:
    workspace_id: UUID
    build_number: int
    transition: Transition
    version_id: UUID
    preset_id: UUID | None
    parameters: Mapping[str, str]
    state: bytes | None
    initiator_id: UUID
    reason: BuildReason
    job_id: UUID


async def lock_workspace(conn: Conn, workspace_id: UUID) -> LockedWorkspace | None:
    row = await fetch_one(conn, "workspaces.lock_workspace", {"id": workspace_id})
    if row is None:
        return None
    return LockedWorkspace(
        id=row["id"],
        name=row["name"],
        owner_id=row["owner_id"],
        template_id=row["template_id"],
        deleted=row["deleted"],
    )


async def latest_build(conn: Conn, workspace_id: UUID) -> LastBuild | None:
    row = await fetch_one(conn, "workspaces.latest_build", {"workspace_id": workspace_id})
    if row is None:
        return None
    return LastBuild(
        build_number=row["build_number"],
        transition=Transition(row["transition"]),
        job_status=JobStatus(row["job_status"]),
        template_version_id=row["template_version_id"],
        preset_id=row["preset_id"],
        parameters=dict(row["parameters"]),
        state=row["state"],
    )


async def infrastructure_ever_ran(conn: Conn, workspace_id: UUID) -> bool:
    """Whether any build of the workspace ever reached a provisioner (a delete has something to tear down)."""
    return bool(await fetch_val(conn, "workspaces.infrastructure_ever_ran", {"workspace_id": workspace_id}))


async def insert_workspace(conn: Conn, workspace: NewWorkspace, now: datetime) -> UUID:
    workspace_id = uuid4()
    await execute(
        conn,
        "workspaces.insert_workspace",
        {
            "id": workspace_id,
            "organization_id": workspace.organization_id,
            "owner_id": workspace.owner_id,
            "template_id": workspace.template_id,
            "name": workspace.name,
            "pool_preset_id": workspace.pool_preset_id,
            "now": now,
        },
    )
    return workspace_id


async def insert_build(conn: Conn, build: NewBuild, now: datetime) -> UUID:
    """Insert the build and move its workspace's latest build number; the build's id."""
    build_id = uuid4()
    await execute(
        conn,
        "workspaces.insert_build",
        {
            "id": build_id,
            "workspace_id": build.workspace_id,
            "build_number": build.build_number,
            "transition": build.transition.value,
            "version_id": build.version_id,
            "preset_id": build.preset_id,
            "parameters": jsonb(dict(build.parameters)),
            "state": build.state,
            "initiator_id": build.initiator_id,
            "reason": build.reason.value,
            "job_id": build.job_id,
            "now": now,
        },
    )
    return build_id


async def mark_deleted(conn: Conn, workspace_id: UUID, now: datetime) -> None:
    await execute(conn, "workspaces.mark_deleted", {"id": workspace_id, "now": now})


# -- workspaces, builds and logs as people read them ---------------------------------------------------------


@dataclass(frozen=True)
class BuildView:
    """A build with its job's status, version and preset names."""

    id: UUID
    workspace_id: UUID
    build_number: int
    transition: str
    status: str
    error: str | None
    failure_class: str | None
    version: str
    preset: str | None
    parameters: Mapping[str, str]
    outputs: Mapping[str, Any]
    reason: str
    created_at: datetime
    completed_at: datetime | None
    job_id: UUID


@dataclass(frozen=True)
class OwnedBuild:
    """A build with what deciding who may read it needs."""

    build: BuildView
    owner_id: UUID
    organization_id: UUID


@dataclass(frozen=True)
class WorkspaceView:
    """A workspace with its owner's and template's names and its latest build (None before the first)."""

    id: UUID
    name: str
    owner: str
    owner_id: UUID
    template: str
    template_id: UUID
    organization_id: UUID
    created_at: datetime
    deleted: bool
    latest_build: BuildView | None


def _build_view(row: Row) -> BuildView:
    return BuildView(
        id=row["build_id"],
        workspace_id=row["workspace_id"],
        build_number=row["build_number"],
        transition=row["transition"],
        status=row["build_status"],
        error=row["build_error"],
        failure_class=row["build_failure_class"],
        version=row["build_version"],
        preset=row["build_preset"],
        parameters=dict(row["build_parameters"]),
        outputs=dict(row["build_outputs"]),
        reason=row["build_reason"],
        created_at=row["build_created_at"],
        completed_at=row["build_completed_at"],
        job_id=row["build_job_id"],
    )


def _workspace_view(row: Row, organization_id: UUID) -> WorkspaceView:
    return WorkspaceView(
        id=row["workspace_id"],
        name=row["name"],
        owner=row["owner"],
        owner_id=row["owner_id"],
        template=row["template"],
        template_id=row["template_id"],
        organization_id=organization_id,
        created_at=row["created_at"],
        deleted=row["deleted"],
        latest_build=_build_view(row) if row["build_id"] is not None else None,
    )


async def list_workspaces(
    conn: Conn, *, organization_id: UUID, owner_id: UUID | None, template: str | None, name: str | None
) -> list[WorkspaceView]:
    rows = await fetch_all(
        conn,
        "api.workspaces",
        {"organization_id": organization_id, "owner_id": owner_id, "template": template, "name": name},
    )
    return [_workspace_view(row, organization_id) for row in rows]


async def workspace_view(conn: Conn, workspace_id: UUID) -> WorkspaceView | None:
    row = await fetch_one(conn, "api.workspace_by_id", {"id": workspace_id})
    return None if row is None else _workspace_view(row, row["organization_id"])


async def builds_of_workspace(conn: Conn, workspace_id: UUID) -> list[BuildView]:
    rows = await fetch_all(conn, "api.builds_of_workspace", {"workspace_id": workspace_id})
    return [_build_view(row) for row in rows]


async def build_view(conn: Conn, build_id: UUID) -> OwnedBuild | None:
    row = await fetch_one(conn, "api.build_by_id", {"id": build_id})
    if row is None:
        return None
    return OwnedBuild(_build_view(row), owner_id=row["owner_id"], organization_id=row["organization_id"])
