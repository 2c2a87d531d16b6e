"""The template catalog as users see it: listing templates, versions and presets, and the rules of changing one.

Activating a version needs its import to have succeeded; changing the active version or the deprecation kicks the
reconciler, which rebuilds or drains the pools. A template is deleted only while no user has a workspace from
it; its rows stay (marked deleted) so that builds and logs remain readable, and the reconciler removes its
prebuilds. Every function takes the acting user and works in that user's organization.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from prebuildd.domain.errors import ErrorCode, PrebuilddError, not_found
from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.domain.jobs import JobStatus
from prebuildd.identity.audit import AuditContext, Target, record
from prebuildd.identity.users import organization_of
from prebuildd.runtime.clock import Clock
from prebuildd.store import templates as store
from prebuildd.store.db import Conn, Database
from prebuildd.store.identity import User
from prebuildd.store.templates import PresetListing, Template, TemplateVersion
from prebuildd.templates.versions import PushedVersion, push_version

__all__ = ["PresetListing", "Template", "TemplateVersion"]

Kick = Callable[[str], None]
"""Wakes the reconciler, with the reason (the pools of a changed template are rebuilt or drained)."""


async def template_named(db: Database, organization_id: UUID, name: str) -> Template:
    """The live template ``name`` of the organization; 404 when there is none."""
    async with db.transaction() as conn:
        template = await store.live_template(conn, organization_id, name)
    if template is None:
        raise not_found(f"template {name}")
    return template


async def _template_of(db: Database, actor: User, name: str) -> Template:
    return await template_named(db, await organization_of(db, actor), name)


async def _version_named(conn: Conn, template: Template, name: str) -> TemplateVersion:
    version = await store.version_by_name(conn, template.id, name)
    if version is None:
        raise not_found(f"version {name} of template {template.name}")
    return version


async def list_templates(db: Database, actor: User) -> list[Template]:
    organization_id = await organization_of(db, actor)
    async with db.transaction() as conn:
        return await store.live_templates(conn, organization_id)


async def push(
    db: Database,
    clock: Clock,
    actor: User,
    name: str,
    archive: bytes,
    *,
    activate: bool,
    message: str,
    audit: AuditContext | None = None,
) -> PushedVersion:
    """Push a version of ``name`` in the actor's organization (see ``versions.push_version``)."""
    organization_id = await organization_of(db, actor)
    if audit is not None:
        audit.about("template", name, organization_id=organization_id)
    return await push_version(
        db,
        clock,
        organization_id=organization_id,
        template_name=name,
        archive=archive,
        created_by=actor.id,
        activate=activate,
        message=message,
        audit=audit,
    )


async def get_template(db: Database, actor: User, name: str) -> Template:
    return await _template_of(db, actor, name)


async def update_template(
    db: Database,
    clock: Clock,
    kick: Kick,
    actor: User,
    name: str,
    *,
    active_version: str | None = None,
    deprecated: bool | None = None,
    deprecation_message: str | None = None,
    audit: AuditContext | None = None,
) -> Template:
    """Activate a version and/or change the deprecation; the reconciler is kicked for what really changed.
    Audited as ``template.activate`` and ``template.deprecate`` (or ``template.undeprecate``)."""
    organization_id = await organization_of(db, actor)
    if audit is not None:
        audit.about("template", name, organization_id=organization_id)
    template = await template_named(db, organization_id, name)
    about = Target("template", template.name, template.id, organization_id)
    if audit is not None:
        audit.target = about
    now = clock.now()
    kicks: list[str] = []
    async with db.transaction() as conn:
        if active_version is not None:
            version = await _version_named(conn, template, active_version)
            _check_activatable(version)
            if not version.active:
                await store.set_active_version(conn, template.id, version.id, now)
                kicks.append("new active version")
            await record(
                conn,
                audit,
                "template.activate",
                about,
                detail={
                    "version": version.name,
                    "version_id": str(version.id),
                    "changed": not version.active,
                },
            )
        if deprecated is not None or deprecation_message is not None:
            deprecated_at, message = _deprecation(template, deprecated, deprecation_message, now)
            await store.set_deprecation(
                conn, template.id, deprecated_at=deprecated_at, message=message, now=now
            )
            if (deprecated_at is None) != (template.deprecated_at is None):
                kicks.append("template deprecated" if deprecated_at else "template deprecation lifted")
            action = "template.deprecate" if deprecated_at else "template.undeprecate"
            await record(conn, audit, action, about, detail={"message": message})
    for reason in kicks:
        kick(reason)
    return await template_named(db, organization_id, name)


def _deprecation(
    template: Template, deprecated: bool | None, deprecation_message: str | None, now: datetime
) -> tuple[datetime | None, str | None]:
    """The template's deprecation time and message after the change: deprecating keeps the first time, lifting
    the deprecation clears both, and a message alone changes the message of a deprecated template."""
    still = template.deprecated_at is not None if deprecated is None else deprecated
    if not still:
        if deprecation_message is not None:
            raise PrebuilddError(
                ErrorCode.INVALID_REQUEST,
                "deprecation_message: only a deprecated template has one; send deprecated: true",
            )
        return None, None
    message = template.deprecation_message if deprecation_message is None else deprecation_message
    return template.deprecated_at or now, message


def _check_activatable(version: TemplateVersion) -> None:
    status = JobStatus(version.import_status)
    if status.is_active:
        raise PrebuilddError(
            ErrorCode.IMPORT_PENDING,
            f"version {version.name} is still importing ({status}); activate it once its import has finished",
        )
    if status is not JobStatus.SUCCEEDED:
        raise PrebuilddError(
            ErrorCode.INVALID_REQUEST,
            f"version {version.name} cannot be activated: its import {status}: "
            f"{version.import_error or 'canceled'}",
        )


async def delete_template(
    db: Database, clock: Clock, kick: Kick, actor: User, name: str, *, audit: AuditContext | None = None
) -> None:
    """Mark the template deleted; refused (conflict) while users still have workspaces from it."""
    organization_id = await organization_of(db, actor)
    if audit is not None:
        audit.about("template", name, organization_id=organization_id)
    template = await template_named(db, organization_id, name)
    if audit is not None:
        audit.about("template", template.name, template.id, organization_id)
    async with db.transaction() as conn:
        if not await store.lock_live_template(conn, template.id):
            raise not_found(f"template {name}")
        live = await store.user_workspaces(conn, template.id, PREBUILDS_USER_ID)
        if live.total:
            more = f" and {live.total - len(live.names)} more" if live.total > len(live.names) else ""
            raise PrebuilddError(
                ErrorCode.CONFLICT,
                f"template {name} still has {live.total} workspace(s) of users ({', '.join(live.names)}{more}); "
                "delete them first",
            )
        await store.mark_deleted(conn, template.id, clock.now())
        await record(conn, audit, "template.delete")
    kick("template deleted")


async def list_versions(db: Database, actor: User, name: str) -> list[TemplateVersion]:
    """The template's versions, newest first."""
    template = await _template_of(db, actor, name)
    async with db.transaction() as conn:
        return await store.versions_of_template(conn, template.id)


async def get_version(
    db: Database, actor: User, name: str, version: str
) -> tuple[TemplateVersion, list[dict[str, Any]]]:
    """One version of the template, with the specs of its declared parameters."""
    template = await _template_of(db, actor, name)
    async with db.transaction() as conn:
        found = await _version_named(conn, template, version)
        return found, await store.version_parameters(conn, found.id)


async def version_import_job(db: Database, actor: User, name: str, version: str) -> UUID:
    """The id of the job that imports (or imported) the version: its log is the import's log."""
    template = await _template_of(db, actor, name)
    async with db.transaction() as conn:
        return (await _version_named(conn, template, version)).job_id


async def list_presets(
    db: Database, actor: User, name: str, version: str | None = None
) -> list[PresetListing]:
    """The presets of ``version`` (the active version by default; none before a version has imported)."""
    template = await _template_of(db, actor, name)
    async with db.transaction() as conn:
        if version is not None:
            version_id = (await _version_named(conn, template, version)).id
        elif template.active_version_id is not None:
            version_id = template.active_version_id
        else:
            return []  # no version has imported yet: nothing to list
        return await store.presets_of_version(conn, version_id)
