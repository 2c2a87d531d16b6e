"""Template versions: pushing one (static checks, then an import job) and recording what its import found.

A push with a broken manifest is refused before anything is stored. A push that passes the static checks creates
the version and its import job; the provisioner's import (e.g. checking that the scripts exist) decides whether the
version becomes usable, and its completion records the declared parameters and presets.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from uuid import UUID, uuid4

import structlog

from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.domain.jobs import JobPriority, JobType
from prebuildd.domain.manifest import (
    MANIFEST_FILE,
    ManifestError,
    TemplateManifest,
    check_presets,
    parse_manifest,
    preset_warnings,
)
from prebuildd.domain.parameters import ParameterSpec
from prebuildd.identity.audit import AuditContext, record
from prebuildd.runtime.clock import Clock
from prebuildd.store import templates as store
from prebuildd.store.db import Conn, Database
from prebuildd.store.errors import StoreConflict
from prebuildd.store.jobs import NewJob, enqueue_job
from prebuildd.store.templates import NewVersion
from prebuildd.templates.archive import (
    MAX_ARCHIVE_ENTRIES,
    MAX_INFLATED_BYTES,
    MAX_PATH_DEPTH,
    MAX_TEMPLATE_BYTES,
    ArchiveLimitError,
    check_archive,
    read_member,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PushedVersion:
    template_id: UUID
    template_name: str
    version_id: UUID
    version_name: str
    job_id: UUID
    warnings: tuple[str, ...]
    created_template: bool


_LIMITS = {
    "entries": (ErrorCode.TOO_LARGE, MAX_ARCHIVE_ENTRIES),
    "size": (ErrorCode.TOO_LARGE, MAX_TEMPLATE_BYTES),
    "inflated": (ErrorCode.TOO_LARGE, MAX_INFLATED_BYTES),
    "depth": (ErrorCode.INVALID_REQUEST, MAX_PATH_DEPTH),
}


def manifest_of(archive: bytes) -> tuple[str, TemplateManifest]:
    """The manifest text and its parsed form, after checking the archive's limits and members.

    Raises PrebuilddError (413 ``too_large`` for too many entries or bytes, 400 for too deep a path; ``detail``
    names the limit and its maximum) or ManifestError when the archive is unreadable or its manifest missing or
    invalid. CPU-bound: :func:`push_version` runs it in a worker thread."""
    try:
        check_archive(archive)
    except ArchiveLimitError as exc:
        code, maximum = _LIMITS[exc.limit]
        raise PrebuilddError(code, str(exc), {"limit": exc.limit, "maximum": maximum}) from None
    except ValueError as exc:
        raise ManifestError(MANIFEST_FILE, "", f"unreadable template archive: {exc}") from exc
    try:
        raw = read_member(archive, MANIFEST_FILE)
    except ValueError as exc:
        raise ManifestError(MANIFEST_FILE, "", f"unreadable template archive: {exc}") from exc
    if raw is None:
        raise ManifestError(MANIFEST_FILE, "", "missing: a template needs a prebuildd.toml at its root")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ManifestError(MANIFEST_FILE, "", f"not UTF-8 text: {exc}") from exc
    return text, parse_manifest(text)


def _checked(archive: bytes) -> tuple[str, TemplateManifest, str]:
    text, manifest = manifest_of(archive)
    return text, manifest, hashlib.sha256(archive).hexdigest()


async def push_version(
    db: Database,
    clock: Clock,
    *,
    organization_id: UUID,
    template_name: str,
    archive: bytes,
    created_by: UUID,
    activate: bool = False,
    message: str = "",
    audit: AuditContext | None = None,
) -> PushedVersion:
    """Create (or extend) a template with a new version and queue its import. Raises ManifestError first, and a
    conflict when another push of the same template won the race for the version's name."""
    # Decompressing and hashing up to 10 MiB is CPU work: off the event loop, so /healthz and every other
    # request keep being served during a push (an inflating archive once held the loop for seconds).
    text, manifest, source_hash = await asyncio.to_thread(_checked, archive)
    warnings = tuple(preset_warnings(manifest))
    now = clock.now()
    try:
        async with db.transaction() as conn:
            template = await store.live_template(conn, organization_id, template_name)
            created = template is None
            if template is None:
                template = await store.insert_template(
                    conn,
                    id=uuid4(),
                    organization_id=organization_id,
                    name=template_name,
                    display_name=manifest.display_name,
                    description=manifest.description,
                    created_by=created_by,
                    now=now,
                )
            else:
                await store.update_template_meta(
                    conn,
                    template.id,
                    display_name=manifest.display_name or template.display_name,
                    description=manifest.description or template.description,
                    now=now,
                )
            number = await store.next_version_number(conn, template.id)
            version_id = uuid4()
            job_id = await enqueue_job(
                conn,
                NewJob(
                    organization_id=organization_id,
                    type=JobType.TEMPLATE_VERSION_IMPORT,
                    provisioner=manifest.provisioner,
                    priority=JobPriority.HUMAN,
                    input={"template_version_id": str(version_id)},
                    initiator_id=created_by,
                    tags=dict(manifest.tags),
                ),
                now,
            )
            await store.insert_version(
                conn,
                NewVersion(
                    id=version_id,
                    template_id=template.id,
                    organization_id=organization_id,
                    name=f"v{number}",
                    message=message,
                    provisioner=manifest.provisioner,
                    manifest=text,
                    source=archive,
                    source_hash=source_hash,
                    tags=dict(manifest.tags),
                    agents=list(manifest.agents),
                    warnings=list(warnings),
                    activate_on_import=activate or template.active_version_id is None,
                    job_id=job_id,
                    created_by=created_by,
                ),
                now,
            )
            await record(
                conn,
                audit,
                "template.push",
                type="template",
                name=template.name,
                id=template.id,
                organization_id=organization_id,
                detail={
                    "version": f"v{number}",
                    "version_id": str(version_id),
                    "job_id": str(job_id),
                    "created_template": created,
                    "activate": activate,
                    "source_hash": source_hash,
                },
            )
    except StoreConflict:
        raise PrebuilddError(
            ErrorCode.CONFLICT,
            f"another version of template {template_name} was pushed at the same time; push again",
        ) from None
    log.info("template.version_pushed", template=template_name, version=f"v{number}", job_id=str(job_id))
    return PushedVersion(template.id, template.name, version_id, f"v{number}", job_id, warnings, created)


async def record_import(
    conn: Conn, clock: Clock, job_id: UUID, parameters: tuple[ParameterSpec, ...], warnings: tuple[str, ...]
) -> None:
    """Store what the successful import job ``job_id`` found, in the caller's transaction; raises ManifestError
    when the presets do not fit the final parameters."""
    version = await store.version_of_import_job(conn, job_id)
    if version is None:
        raise PrebuilddError(ErrorCode.INTERNAL, f"import job {job_id} has no template version")
    manifest = parse_manifest(version.manifest)
    check_presets(parameters, manifest.presets)
    merged = TemplateManifest(**{**manifest.__dict__, "parameters": parameters})
    all_warnings = list(dict.fromkeys([*preset_warnings(merged), *warnings]))
    now = clock.now()
    for position, spec in enumerate(parameters):
        await store.insert_parameter(conn, version.id, name=spec.name, position=position, spec=spec.to_json())
    for preset in manifest.presets:
        preset_id = uuid4()
        settings = preset.prebuilds
        await store.insert_preset(
            conn,
            id=preset_id,
            version_id=version.id,
            name=preset.name,
            description=preset.description,
            parameters=preset.parameters,
            desired_instances=settings.instances if settings else None,
            ttl_seconds=settings.ttl_seconds if settings else 0,
            timezone=settings.timezone if settings else "UTC",
            now=now,
            autoscale=settings.autoscale.as_dict() if settings and settings.autoscale else None,
            target_expression=settings.expression if settings else None,
        )
        for position, schedule in enumerate(settings.schedules if settings else ()):
            await store.insert_preset_schedule(
                conn, preset_id, position=position, cron=schedule.cron, desired_instances=schedule.instances
            )
    await store.set_version_warnings(conn, version.id, all_warnings, now)
    if version.activate_on_import:
        await store.set_active_version(conn, version.template_id, version.id, now)
    log.info(
        "template.version_imported",
        version_id=str(version.id),
        parameters=len(parameters),
        presets=len(manifest.presets),
        activated=version.activate_on_import,
    )
