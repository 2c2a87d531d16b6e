"""Routes: templates, their versions (pushed as a gzip'd tar, imported by a job) and presets.

A push with a broken manifest is refused before anything is stored (``ManifestError`` → 400). The rules of
activation, deprecation and deletion are the catalog's (``templates.catalog``); these routes parse, authorize,
call it and shape the answer.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from prebuildd.api.auditing import audited
from prebuildd.api.deps import AuditDep, ServicesDep, UserDep, may, permission
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
from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.domain.permissions import Action
from prebuildd.identity.users import User, require
from prebuildd.templates import catalog
from prebuildd.templates.archive import MAX_TEMPLATE_BYTES

router = APIRouter(tags=["templates"])

TemplateWriter = Annotated[User, permission(Action.TEMPLATE_WRITE)]

AfterQuery = Annotated[int, Query(ge=0, le=2**62, description="Only lines with an id above this one.")]
LimitQuery = Annotated[int, Query(ge=1, le=10_000, description="At most this many lines; page with `after`.")]

_ARCHIVE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The template directory as a gzip'd tar (`prebuildd.toml` at its root).",
        "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _version_for(user: User, version: VersionOut) -> VersionOut:
    """The version as the caller may see it: an import error is script output, for template-admins only."""
    if version.import_error is None or may(user, Action.OUTPUTS_READ):
        return version
    return version.model_copy(
        update={"import_error": "import failed (the error is shown to template-admins)"}
    )


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


@router.get("/templates", response_model=list[TemplateOut], summary="Every template, with its active version")
async def list_templates(services: ServicesDep, user: UserDep) -> list[TemplateOut]:
    return [TemplateOut.from_template(t) for t in await catalog.list_templates(services.db, user)]


@router.post(
    "/templates/{name}/versions",
    response_model=PushedVersionOut,
    status_code=201,
    summary="Push a new version (the template is created on its first push); its import runs as a job",
    openapi_extra=_ARCHIVE_BODY,
    responses={413: {"description": "The archive is larger than a template may be."}},
)
@audited("template.push", "template", "name")
async def push(
    name: TemplateName,
    request: Request,
    services: ServicesDep,
    user: TemplateWriter,
    audit: AuditDep,
    activate: Annotated[bool, Query(description="Make it the active version once imported.")] = False,
    message: Annotated[LongText, Query(description="What changed.")] = "",
) -> PushedVersionOut:
    archive = await _read_archive(request)
    pushed = await catalog.push(
        services.db, services.clock, user, name, archive, activate=activate, message=message, audit=audit
    )
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
    return TemplateOut.from_template(await catalog.get_template(services.db, user, name))


@router.patch(
    "/templates/{name}",
    response_model=TemplateOut,
    summary="Activate a version, or deprecate the template (or lift its deprecation)",
    responses={406: {"description": "The version is still importing."}},
)
@audited("template.activate", "template", "name")
async def update_template(
    name: TemplateName, body: TemplateUpdate, services: ServicesDep, user: UserDep, audit: AuditDep
) -> TemplateOut:
    # The role is checked here, not by a dependency, so that a refusal is recorded as the action it refused.
    if body.active_version is None:
        lifted = body.deprecated is False
        audit.action = "template.undeprecate" if lifted else "template.deprecate"
    require(user, Action.TEMPLATE_WRITE)
    template = await catalog.update_template(
        services.db,
        services.clock,
        services.kick,
        user,
        name,
        active_version=body.active_version,
        deprecated=body.deprecated,
        deprecation_message=body.deprecation_message,
        audit=audit,
    )
    return TemplateOut.from_template(template)


@router.delete(
    "/templates/{name}",
    status_code=204,
    response_class=Response,
    summary="Delete a template (refused while users have workspaces from it; prebuilds are removed)",
    responses={409: {"description": "Users still have workspaces from this template."}},
)
@audited("template.delete", "template", "name")
async def delete_template(
    name: TemplateName, services: ServicesDep, user: TemplateWriter, audit: AuditDep
) -> Response:
    await catalog.delete_template(services.db, services.clock, services.kick, user, name, audit=audit)
    return Response(status_code=204)


@router.get(
    "/templates/{name}/versions",
    response_model=list[VersionOut],
    summary="A template's versions, newest first",
)
async def list_versions(name: TemplateName, services: ServicesDep, user: UserDep) -> list[VersionOut]:
    versions = [VersionOut.from_version(v) for v in await catalog.list_versions(services.db, user, name)]
    return [_version_for(user, v) for v in versions]


@router.get(
    "/templates/{name}/versions/{version}",
    response_model=VersionOut,
    summary="One version, with its declared parameters",
)
async def get_version(
    name: TemplateName, version: VersionName, services: ServicesDep, user: UserDep
) -> VersionOut:
    found, parameters = await catalog.get_version(services.db, user, name, version)
    return _version_for(user, VersionOut.from_version(found, parameters))


@router.get(
    "/templates/{name}/versions/{version}/logs",
    response_model=list[LogLineOut],
    summary="The log of a version's import job (template-admins and owners: script output can hold secrets)",
)
async def version_logs(
    name: TemplateName,
    version: VersionName,
    services: ServicesDep,
    user: Annotated[User, permission(Action.OUTPUTS_READ)],
    after: AfterQuery = 0,
    limit: LimitQuery = 10_000,
) -> list[LogLineOut]:
    job_id = await catalog.version_import_job(services.db, user, name, version)
    lines = await services.queue.logs(job_id, after=after, limit=limit)
    return [LogLineOut.from_line(line) for line in lines]


@router.get(
    "/templates/{name}/presets",
    response_model=list[PresetOut],
    summary="The presets of a version (the active one by default); the last prebuild error: template-admins",
)
async def list_presets(
    name: TemplateName,
    services: ServicesDep,
    user: UserDep,
    version: Annotated[VersionName | None, Query(description="e.g. v2; default: the active version")] = None,
) -> list[PresetOut]:
    presets = [PresetOut.from_preset(p) for p in await catalog.list_presets(services.db, user, name, version)]
    if may(user, Action.OUTPUTS_READ):
        return presets
    return [p.model_copy(update={"prebuild_last_error": None}) for p in presets]
