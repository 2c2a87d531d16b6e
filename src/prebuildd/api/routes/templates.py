"""Routes: templates, their versions (pushed as a gzip'd tar, imported by a job) and presets.

A push with a broken manifest is refused before anything is stored (``ManifestError`` → 400). Activating a
version needs its import to have succeeded; changing the active version or the deprecation kicks the reconciler,
which rebuilds or drains the pools. A deleted template keeps its rows (marked deleted) so builds and logs stay
readable; its prebuilds are removed by the reconciler.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Query, Request, Response

from prebuildd.api.deps import ServicesDep, TemplateAdminDep, UserDep
from prebuildd.api.lookups import organization_of, template_named
from prebuildd.api.models import (
    LogLineOut,
    LongText,
    PresetOut,
    PushedVersionOut,
    TemplateName,
    TemplateOut,
    TemplateUpdate,
    VersionName,
    VersionOut,
)
from prebuildd.domain.errors import ErrorCode, PrebuilddError, not_found
from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.domain.jobs import JobStatus
from prebuildd.services import Services
from prebuildd.store.db import Conn, Row, execute, fetch_all, fetch_one
from prebuildd.templates.archive import MAX_TEMPLATE_BYTES
from prebuildd.templates.versions import push_version

router = APIRouter(tags=["templates"])

AfterQuery = Annotated[int, Query(ge=0, le=2**62, description="Only lines with an id above this one.")]
LimitQuery = Annotated[int, Query(ge=1, le=10_000, description="At most this many lines; page with `after`.")]

_ARCHIVE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The template directory as a gzip'd tar (`prebuildd.toml` at its root).",
        "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
    }
}


async def _read_archive(request: Request) -> bytes:
    """The request body, refused (413) beyond the size a template may have."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_TEMPLATE_BYTES:
            raise PrebuilddError(
                ErrorCode.TOO_LARGE,
                f"template archive too large: at most {MAX_TEMPLATE_BYTES // (1024 * 1024)} MiB",
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def _version_named(conn: Conn, template: Row, name: str) -> Row:
    row = await fetch_one(conn, "api.version_by_name", {"template_id": template["id"], "name": name})
    if row is None:
        raise not_found(f"version {name} of template {template['name']}")
    return row


async def _template_of_caller(services: Services, user: Row, name: str) -> Row:
    return await template_named(services, await organization_of(services, user), name)


@router.get("/templates", response_model=list[TemplateOut], summary="Every template, with its active version")
async def list_templates(services: ServicesDep, user: UserDep) -> list[TemplateOut]:
    organization_id = await organization_of(services, user)
    async with services.db.transaction() as conn:
        rows = await fetch_all(conn, "api.templates", {"organization_id": organization_id})
    return [TemplateOut.from_row(row) for row in rows]


@router.post(
    "/templates/{name}/versions",
    response_model=PushedVersionOut,
    status_code=201,
    summary="Push a new version (the template is created on its first push); its import runs as a job",
    openapi_extra=_ARCHIVE_BODY,
    responses={413: {"description": "The archive is larger than a template may be."}},
)
async def push(
    name: TemplateName,
    request: Request,
    services: ServicesDep,
    user: TemplateAdminDep,
    activate: Annotated[bool, Query(description="Make it the active version once imported.")] = False,
    message: Annotated[LongText, Query(description="What changed.")] = "",
) -> PushedVersionOut:
    archive = await _read_archive(request)
    organization_id = await organization_of(services, user)
    try:
        pushed = await push_version(
            services.db,
            services.clock,
            organization_id=organization_id,
            template_name=name,
            archive=archive,
            created_by=user["id"],
            activate=activate,
            message=message,
        )
    except psycopg.errors.UniqueViolation:
        raise PrebuilddError(
            ErrorCode.CONFLICT, f"another version of template {name} was pushed at the same time; push again"
        ) from None
    return PushedVersionOut(
        template=pushed.template_name,
        template_id=pushed.template_id,
        version=pushed.version_name,
        version_id=pushed.version_id,
        job_id=pushed.job_id,
        warnings=list(pushed.warnings),
        created_template=pushed.created_template,
    )


@router.get("/templates/{name}", response_model=TemplateOut, summary="One template")
async def get_template(name: TemplateName, services: ServicesDep, user: UserDep) -> TemplateOut:
    return TemplateOut.from_row(await _template_of_caller(services, user, name))


@router.patch(
    "/templates/{name}",
    response_model=TemplateOut,
    summary="Activate a version, or deprecate the template (or lift its deprecation)",
    responses={406: {"description": "The version is still importing."}},
)
async def update_template(
    name: TemplateName, body: TemplateUpdate, services: ServicesDep, user: TemplateAdminDep
) -> TemplateOut:
    organization_id = await organization_of(services, user)
    template = await template_named(services, organization_id, name)
    now = services.clock.now()
    kicks: list[str] = []
    async with services.db.transaction() as conn:
        if body.active_version is not None:
            version = await _version_named(conn, template, body.active_version)
            _check_activatable(version)
            if not version["active"]:
                await execute(
                    conn,
                    "templates.set_active_version",
                    {"template_id": template["id"], "version_id": version["id"], "now": now},
                )
                kicks.append("new active version")
        if body.deprecated is not None or body.deprecation_message is not None:
            deprecated_at, message = _deprecation(template, body, now)
            await execute(
                conn,
                "api.set_deprecation",
                {"id": template["id"], "deprecated_at": deprecated_at, "message": message, "now": now},
            )
            if (deprecated_at is None) != (template["deprecated_at"] is None):
                kicks.append("template deprecated" if deprecated_at else "template deprecation lifted")
    for reason in kicks:
        services.kick(reason)
    return TemplateOut.from_row(await template_named(services, organization_id, name))


def _deprecation(template: Row, body: TemplateUpdate, now: datetime) -> tuple[datetime | None, str | None]:
    """The template's deprecation time and message after ``body``: deprecating keeps the first time, lifting the
    deprecation clears both, and a message alone changes the message of a deprecated template."""
    deprecated = template["deprecated_at"] is not None if body.deprecated is None else body.deprecated
    if not deprecated:
        if body.deprecation_message is not None:
            raise PrebuilddError(
                ErrorCode.INVALID_REQUEST,
                "deprecation_message: only a deprecated template has one; send deprecated: true",
            )
        return None, None
    message = (
        template["deprecation_message"] if body.deprecation_message is None else body.deprecation_message
    )
    return template["deprecated_at"] or now, message


def _check_activatable(version: Row) -> None:
    status = JobStatus(version["import_status"])
    if status.is_active:
        raise PrebuilddError(
            ErrorCode.IMPORT_PENDING,
            f"version {version['name']} is still importing ({status}); activate it once its import has finished",
        )
    if status is not JobStatus.SUCCEEDED:
        raise PrebuilddError(
            ErrorCode.INVALID_REQUEST,
            f"version {version['name']} cannot be activated: its import {status}: "
            f"{version['import_error'] or 'canceled'}",
        )


@router.delete(
    "/templates/{name}",
    status_code=204,
    response_class=Response,
    summary="Delete a template (refused while users have workspaces from it; prebuilds are removed)",
    responses={409: {"description": "Users still have workspaces from this template."}},
)
async def delete_template(name: TemplateName, services: ServicesDep, user: TemplateAdminDep) -> Response:
    template = await _template_of_caller(services, user, name)
    async with services.db.transaction() as conn:
        if await fetch_one(conn, "api.lock_template", {"id": template["id"]}) is None:
            raise not_found(f"template {name}")
        live = await fetch_all(
            conn,
            "api.user_workspaces_of_template",
            {"template_id": template["id"], "prebuilds_user_id": PREBUILDS_USER_ID},
        )
        if live:
            names = ", ".join(f"{row['username']}/{row['name']}" for row in live)
            more = f" and {live[0]['total'] - len(live)} more" if live[0]["total"] > len(live) else ""
            raise PrebuilddError(
                ErrorCode.CONFLICT,
                f"template {name} still has {live[0]['total']} workspace(s) of users ({names}{more}); "
                "delete them first",
            )
        await execute(conn, "api.mark_template_deleted", {"id": template["id"], "now": services.clock.now()})
    services.kick("template deleted")
    return Response(status_code=204)


@router.get(
    "/templates/{name}/versions",
    response_model=list[VersionOut],
    summary="A template's versions, newest first",
)
async def list_versions(name: TemplateName, services: ServicesDep, user: UserDep) -> list[VersionOut]:
    template = await _template_of_caller(services, user, name)
    async with services.db.transaction() as conn:
        rows = await fetch_all(conn, "api.versions_of_template", {"template_id": template["id"]})
    return [VersionOut.from_row(row) for row in rows]


@router.get(
    "/templates/{name}/versions/{version}",
    response_model=VersionOut,
    summary="One version, with its declared parameters",
)
async def get_version(
    name: TemplateName, version: VersionName, services: ServicesDep, user: UserDep
) -> VersionOut:
    template = await _template_of_caller(services, user, name)
    async with services.db.transaction() as conn:
        row = await _version_named(conn, template, version)
        parameters = await fetch_all(conn, "templates.version_parameters", {"version_id": row["id"]})
    return VersionOut.from_row(row, [dict(p["spec"]) for p in parameters])


@router.get(
    "/templates/{name}/versions/{version}/logs",
    response_model=list[LogLineOut],
    summary="The log of a version's import job",
)
async def version_logs(
    name: TemplateName,
    version: VersionName,
    services: ServicesDep,
    user: UserDep,
    after: AfterQuery = 0,
    limit: LimitQuery = 10_000,
) -> list[LogLineOut]:
    template = await _template_of_caller(services, user, name)
    async with services.db.transaction() as conn:
        row = await _version_named(conn, template, version)
    lines = await services.queue.logs(row["job_id"], after=after, limit=limit)
    return [LogLineOut.from_row(line) for line in lines]


@router.get(
    "/templates/{name}/presets",
    response_model=list[PresetOut],
    summary="The presets of a version (the active one by default)",
)
async def list_presets(
    name: TemplateName,
    services: ServicesDep,
    user: UserDep,
    version: Annotated[VersionName | None, Query(description="e.g. v2; default: the active version")] = None,
) -> list[PresetOut]:
    template = await _template_of_caller(services, user, name)
    async with services.db.transaction() as conn:
        if version is not None:
            version_id = (await _version_named(conn, template, version))["id"]
        elif template["active_version_id"] is not None:
            version_id = template["active_version_id"]
        else:
            return []  # no version has imported yet: nothing to list
        rows = await fetch_all(conn, "api.presets_of_version", {"version_id": version_id})
    return [PresetOut.from_row(row) for row in rows]
