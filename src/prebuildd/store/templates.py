"""The template repository: templates, their versions (with the status of their import job), parameters, presets,
and what a finished import records.

Takes and returns frozen dataclasses; the queries are in ``queries/templates.sql``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from prebuildd.store.db import Conn
from prebuildd.store.rows import execute, fetch_all, fetch_all_as, fetch_one, fetch_val, jsonb


@dataclass(frozen=True)
class Template:
    """A live template with the name of its active version (None before a version has imported)."""

    id: UUID
    organization_id: UUID
    name: str
    display_name: str
    description: str
    active_version_id: UUID | None
    active_version: str | None
    deprecated_at: datetime | None
    deprecation_message: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class TemplateVersion:
    """A version as operators see it: its import job's status and error, and whether it is active."""

    id: UUID
    name: str
    template: str
    message: str
    provisioner: str
    import_status: str
    import_error: str | None
    warnings: list[str] | None
    active: bool
    created_at: datetime
    job_id: UUID


@dataclass(frozen=True)
class ImportedVersion:
    """The version an import job imported: what its completion needs to record the result."""

    id: UUID
    template_id: UUID
    organization_id: UUID
    name: str
    provisioner: str
    manifest: str
    activate_on_import: bool


@dataclass(frozen=True)
class PresetSchedule:
    cron: str
    instances: int


@dataclass(frozen=True)
class PresetListing:
    """A preset with its pool settings, schedule and pool status, as listed for a version."""

    id: UUID
    name: str
    description: str
    version: str
    parameters: Mapping[str, str]
    desired_instances: int | None
    ttl_seconds: int
    timezone: str
    prebuild_status: str
    prebuild_status_reason: str | None
    prebuild_last_error: str | None
    schedules: tuple[PresetSchedule, ...]


@dataclass(frozen=True)
class UserWorkspaces:
    """Some of the live workspaces of real users made from a template (as ``owner/name``), and how many in all."""

    names: tuple[str, ...]
    total: int


@dataclass(frozen=True)
class NewVersion:
    """A version to store, as a push creates it (its archive, the manifest text, what the manifest declares)."""

    id: UUID
    template_id: UUID
    organization_id: UUID
    name: str
    message: str
    provisioner: str
    manifest: str
    source: bytes
    source_hash: str
    tags: Mapping[str, str]
    agents: Sequence[Any]
    warnings: Sequence[str]
    activate_on_import: bool
    job_id: UUID
    created_by: UUID


# -- templates ---------------------------------------------------------------------------------------------


async def live_templates(conn: Conn, organization_id: UUID) -> list[Template]:
    return await fetch_all_as(
        conn, "templates.live_templates", {"organization_id": organization_id}, Template
    )


async def live_template(conn: Conn, organization_id: UUID, name: str) -> Template | None:
    """The live template ``name`` (case-insensitively) of the organization."""
    row = await fetch_one(conn, "templates.live_template", {"organization_id": organization_id, "name": name})
    return None if row is None else Template(**row)


async def insert_template(
    conn: Conn,
    *,
    id: UUID,
    organization_id: UUID,
    name: str,
    display_name: str,
    description: str,
    created_by: UUID,
    now: datetime,
) -> Template:
    row = await fetch_one(
        conn,
        "templates.insert_template",
        {
            "id": id,
            "organization_id": organization_id,
            "name": name,
            "display_name": display_name,
            "description": description,
            "created_by": created_by,
            "now": now,
        },
    )
    if row is None:
        raise RuntimeError("templates.insert_template returned no row")
    return Template(**row)


async def update_template_meta(
    conn: Conn, template_id: UUID, *, display_name: str, description: str, now: datetime
) -> None:
    await execute(
        conn,
        "templates.update_template_meta",
        {"id": template_id, "display_name": display_name, "description": description, "now": now},
    )


async def set_active_version(conn: Conn, template_id: UUID, version_id: UUID, now: datetime) -> None:
    await execute(
        conn,
        "templates.set_active_version",
        {"template_id": template_id, "version_id": version_id, "now": now},
    )


async def set_deprecation(
    conn: Conn, template_id: UUID, *, deprecated_at: datetime | None, message: str | None, now: datetime
) -> None:
    await execute(
        conn,
        "templates.set_deprecation",
        {"id": template_id, "deprecated_at": deprecated_at, "message": message, "now": now},
    )


async def lock_live_template(conn: Conn, template_id: UUID) -> bool:
    """Lock the template's row for this transaction; False when it is deleted meanwhile."""
    return await fetch_one(conn, "templates.lock_template", {"id": template_id}) is not None


async def user_workspaces(conn: Conn, template_id: UUID, prebuilds_user_id: UUID) -> UserWorkspaces:
    rows = await fetch_all(
        conn,
        "templates.user_workspaces_of_template",
        {"template_id": template_id, "prebuilds_user_id": prebuilds_user_id},
    )
    names = tuple(f"{row['username']}/{row['name']}" for row in rows)
    return UserWorkspaces(names, int(rows[0]["total"]) if rows else 0)


async def mark_deleted(conn: Conn, template_id: UUID, now: datetime) -> None:
    await execute(conn, "templates.mark_template_deleted", {"id": template_id, "now": now})


# -- versions ----------------------------------------------------------------------------------------------


async def next_version_number(conn: Conn, template_id: UUID) -> int:
    return int(await fetch_val(conn, "templates.next_version_number", {"template_id": template_id}))


async def insert_version(conn: Conn, version: NewVersion, now: datetime) -> None:
    await execute(
        conn,
        "templates.insert_version",
        {
            "id": version.id,
            "template_id": version.template_id,
            "organization_id": version.organization_id,
            "name": version.name,
            "message": version.message,
            "provisioner": version.provisioner,
            "manifest": version.manifest,
            "source": version.source,
            "source_hash": version.source_hash,
            "tags": jsonb(dict(version.tags)),
            "agents": jsonb(list(version.agents)),
            "warnings": jsonb(list(version.warnings)),
            "activate_on_import": version.activate_on_import,
            "job_id": version.job_id,
            "created_by": version.created_by,
            "now": now,
        },
    )


async def versions_of_template(conn: Conn, template_id: UUID) -> list[TemplateVersion]:
    return await fetch_all_as(
        conn, "templates.versions_of_template", {"template_id": template_id}, TemplateVersion
    )


async def version_by_name(conn: Conn, template_id: UUID, name: str) -> TemplateVersion | None:
    row = await fetch_one(conn, "templates.version_by_name", {"template_id": template_id, "name": name})
    return None if row is None else TemplateVersion(**row)


async def version_parameters(conn: Conn, version_id: UUID) -> list[dict[str, Any]]:
    """The declared parameters' specs (JSON objects), in manifest order."""
    rows = await fetch_all(conn, "templates.version_parameters", {"version_id": version_id})
    return [dict(row["spec"]) for row in rows]


async def presets_of_version(conn: Conn, version_id: UUID) -> list[PresetListing]:
    rows = await fetch_all(conn, "templates.presets_of_version", {"version_id": version_id})
    return [
        PresetListing(
            id=row["id"],
            name=row["name"],
            description=row["description"],
            version=row["version"],
            parameters=dict(row["parameters"]),
            desired_instances=row["desired_instances"],
            ttl_seconds=row["ttl_seconds"],
            timezone=row["timezone"],
            prebuild_status=row["prebuild_status"],
            prebuild_status_reason=row["prebuild_status_reason"],
            prebuild_last_error=row["prebuild_last_error"],
            schedules=tuple(PresetSchedule(s["cron"], s["instances"]) for s in row["schedules"]),
        )
        for row in rows
    ]


# -- what an import records --------------------------------------------------------------------------------


async def version_of_import_job(conn: Conn, job_id: UUID) -> ImportedVersion | None:
    row = await fetch_one(conn, "templates.version_by_job", {"job_id": job_id})
    return None if row is None else ImportedVersion(**row)


async def insert_parameter(
    conn: Conn, version_id: UUID, *, name: str, position: int, spec: Mapping[str, Any]
) -> None:
    await execute(
        conn,
        "templates.insert_parameter",
        {"version_id": version_id, "name": name, "position": position, "spec": jsonb(dict(spec))},
    )


async def insert_preset(
    conn: Conn,
    *,
    id: UUID,
    version_id: UUID,
    name: str,
    description: str,
    parameters: Mapping[str, str],
    desired_instances: int | None,
    ttl_seconds: int,
    timezone: str,
    now: datetime,
    autoscale: Mapping[str, object] | None = None,
    target_expression: str | None = None,
) -> None:
    await execute(
        conn,
        "templates.insert_preset",
        {
            "id": id,
            "version_id": version_id,
            "name": name,
            "description": description,
            "parameters": jsonb(dict(parameters)),
            "desired_instances": desired_instances,
            "ttl_seconds": ttl_seconds,
            "timezone": timezone,
            "autoscale": None if autoscale is None else jsonb(dict(autoscale)),
            "target_expression": target_expression,
            "now": now,
        },
    )


async def insert_preset_schedule(
    conn: Conn, preset_id: UUID, *, position: int, cron: str, desired_instances: int
) -> None:
    await execute(
        conn,
        "templates.insert_preset_schedule",
        {"preset_id": preset_id, "position": position, "cron": cron, "desired_instances": desired_instances},
    )


async def set_version_warnings(conn: Conn, version_id: UUID, warnings: Sequence[str], now: datetime) -> None:
    await execute(
        conn,
        "templates.set_version_warnings",
        {"id": version_id, "warnings": jsonb(list(warnings)), "now": now},
    )
