"""The workspace builder: the one code path that creates builds, for users, prebuilds, claims and deletes.

It resolves the template version, resolves and validates parameter values, refuses a second active build, and
inserts the build and its provisioner job in the caller's transaction. Refusals are ``BuildError``s whose status
says whether retrying can help (SPEC §3). ``record_failed_build`` writes a refused build as a failed record so that
failure handling has evidence to count.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from uuid import UUID

import structlog

from prebuildd.domain.errors import BAD_REQUEST, CONFLICT, INTERNAL, NOT_ACCEPTABLE, NOT_FOUND, BuildError
from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.domain.jobs import BuildReason, FailureClass, JobPriority, JobStatus, JobType, Transition
from prebuildd.domain.parameters import ParameterError, ParameterSpec, resolve_parameters
from prebuildd.runtime.clock import Clock
from prebuildd.store import workspaces as store
from prebuildd.store.db import Conn, Database
from prebuildd.store.errors import StoreConflict, StoreError
from prebuildd.store.jobs import NewJob, enqueue_job, record_finished_job
from prebuildd.store.workspaces import BuildTemplate, BuildVersion, LastBuild, NewBuild, NewWorkspace

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class BuildRequest:
    """What to build. Either ``workspace_id`` (an existing workspace) or the fields of a new one."""

    transition: Transition
    initiator_id: UUID
    reason: BuildReason = BuildReason.INITIATOR
    workspace_id: UUID | None = None
    organization_id: UUID | None = None
    owner_id: UUID | None = None
    template_id: UUID | None = None
    name: str | None = None
    version_id: UUID | None = None
    preset_id: UUID | None = None
    parameters: Mapping[str, object] = field(default_factory=dict)
    priority: int = JobPriority.HUMAN
    expected_owner_id: UUID | None = None
    """Existing workspaces: refuse (409) unless still owned by this user, checked under the row lock. A reconciler
    delete sets it to the prebuilds user, so a delete and a claim of the same prebuild can never both win."""


@dataclass(frozen=True)
class BuildCreated:
    workspace_id: UUID
    build_id: UUID
    build_number: int
    job_id: UUID
    orphan_deleted: bool = False
    """True when a delete completed at once because the workspace's infrastructure never ran."""


def prebuild_name() -> str:
    return f"prebuild-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class _Resolved:
    version: BuildVersion
    preset_id: UUID | None
    parameters: dict[str, str]


class WorkspaceBuilder:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    async def build(self, conn: Conn, req: BuildRequest) -> BuildCreated:
        """Create the build and its job inside the caller's transaction, or raise ``BuildError``."""
        try:
            async with conn.transaction():  # a savepoint: a refusal leaves the caller's transaction usable
                if req.workspace_id is None:
                    return await self._build_new(conn, req)
                return await self._build_existing(conn, req, req.workspace_id)
        except BuildError:
            raise
        except StoreConflict as exc:
            raise BuildError(CONFLICT, _conflict_message(exc)) from exc
        except StoreError as exc:
            log.warning("builder.store_error", error=str(exc))
            raise BuildError(INTERNAL, f"store error while creating the build: {exc}") from exc

    async def record_failed_build(self, db: Database, req: BuildRequest, error: BuildError) -> BuildCreated:
        """Write a refused creation as workspace + build + failed job (class `config`) in its own transaction.

        The record is evidence: it feeds the backoff and the hard limit, and its error says what was wrong.
        """
        if req.workspace_id is not None or req.template_id is None:
            raise ValueError("record_failed_build records the creation of a new workspace")
        async with db.transaction() as conn:
            template = await self._template(conn, req.template_id)
            version_id = req.version_id or template.active_version_id
            if version_id is None:
                raise error
            version = await store.version_by_id(conn, version_id)
            if version is None:
                raise error
            workspace_id = await self._insert_workspace(conn, req, template)
            values = {k: str(v) for k, v in req.parameters.items()}
            if req.preset_id is not None:
                preset = await store.preset_by_id(conn, req.preset_id)
                if preset is not None:
                    values = {**preset.parameters, **values}
            job_id = await record_finished_job(
                conn,
                self._job(req, version, workspace_id),
                self.clock.now(),
                error=error.message,
                failure_class=FailureClass.CONFIG,
            )
            created = await self._insert_build(
                conn, req, workspace_id, 1, version.id, req.preset_id, values, None, job_id
            )
        log.info("builder.failed_build_recorded", workspace_id=str(workspace_id), error=error.message)
        return created

    # -- new workspace -------------------------------------------------------------------------------------

    async def _build_new(self, conn: Conn, req: BuildRequest) -> BuildCreated:
        if req.transition is not Transition.START:
            raise BuildError(BAD_REQUEST, f"a new workspace starts with a start build, not {req.transition}")
        if req.template_id is None or req.owner_id is None or not req.name:
            raise BuildError(BAD_REQUEST, "a new workspace needs a template, an owner and a name")
        template = await self._template(conn, req.template_id)
        if template.deprecated_at is not None and req.reason is not BuildReason.PREBUILD:
            message = template.deprecation_message or "no new workspaces"
            raise BuildError(BAD_REQUEST, f"template {template.name} is deprecated: {message}")
        resolved = await self._resolve(conn, req, template, previous=None)
        workspace_id = await self._insert_workspace(conn, req, template)
        job_id = await enqueue_job(conn, self._job(req, resolved.version, workspace_id), self.clock.now())
        return await self._insert_build(
            conn,
            req,
            workspace_id,
            1,
            resolved.version.id,
            resolved.preset_id,
            resolved.parameters,
            None,
            job_id,
        )

    async def _template(self, conn: Conn, template_id: UUID) -> BuildTemplate:
        template = await store.template_by_id(conn, template_id)
        if template is None or template.deleted:
            raise BuildError(NOT_FOUND, f"template {template_id} not found")
        return template

    async def _resolve(
        self, conn: Conn, req: BuildRequest, template: BuildTemplate, previous: LastBuild | None
    ) -> _Resolved:
        version_id = req.version_id or (previous.template_version_id if previous else None)
        version_id = version_id or template.active_version_id
        if version_id is None:
            latest = await store.latest_import(conn, template.id)
            if latest is not None and latest.status.is_active:
                raise BuildError(
                    NOT_ACCEPTABLE,
                    f"template {template.name}: version {latest.version_name} is "
                    "still importing; try again when its import has finished",
                )
            raise BuildError(
                BAD_REQUEST,
                f"template {template.name} has no active version (no version has imported successfully)",
            )
        version = await store.version_by_id(conn, version_id)
        if version is None or version.template_id != template.id:
            raise BuildError(
                BAD_REQUEST, f"version {version_id} is not a version of template {template.name}"
            )
        status = version.import_status
        if status.is_active:
            raise BuildError(NOT_ACCEPTABLE, f"template version {version.name} is still importing ({status})")
        if status is not JobStatus.SUCCEEDED:
            raise BuildError(
                BAD_REQUEST,
                f"template version {version.name} cannot be used: its import "
                f"{status}: {version.import_error or 'canceled'}",
            )
        preset_values: dict[str, str] | None = None
        preset_id = req.preset_id
        if preset_id is not None:
            preset = await store.preset_by_id(conn, preset_id)
            if preset is None or preset.template_version_id != version.id:
                raise BuildError(BAD_REQUEST, f"preset {preset_id} is not a preset of version {version.name}")
            preset_values = dict(preset.parameters)
        specs = await self.parameter_specs(conn, version.id)
        try:
            values = resolve_parameters(
                specs,
                explicit=req.parameters,
                preset=preset_values,
                previous=dict(previous.parameters) if previous else None,
            )
        except ParameterError as exc:
            raise BuildError(BAD_REQUEST, str(exc)) from exc
        return _Resolved(version=version, preset_id=preset_id, parameters=values)

    @staticmethod
    async def parameter_specs(conn: Conn, version_id: UUID) -> list[ParameterSpec]:
        return await store.parameter_specs(conn, version_id)

    # -- existing workspace --------------------------------------------------------------------------------

    async def _build_existing(self, conn: Conn, req: BuildRequest, workspace_id: UUID) -> BuildCreated:
        workspace = await store.lock_workspace(conn, workspace_id)
        if workspace is None:
            raise BuildError(NOT_FOUND, f"workspace {workspace_id} not found")
        if workspace.deleted:
            raise BuildError(BAD_REQUEST, f"workspace {workspace.name} is deleted")
        if req.expected_owner_id is not None and workspace.owner_id != req.expected_owner_id:
            raise BuildError(CONFLICT, f"workspace {workspace.name} changed owner")
        last = await store.latest_build(conn, workspace_id)
        if last is None:
            raise BuildError(INTERNAL, f"workspace {workspace.name} has no build")
        if last.job_status.is_active:
            raise BuildError(
                CONFLICT,
                f"workspace {workspace.name} already has an active build "
                f"(#{last.build_number} {last.transition}, {last.job_status})",
            )
        number = last.build_number + 1
        if req.transition is Transition.START:
            template = await self._template(conn, workspace.template_id)
            resolved = await self._resolve(conn, req, template, previous=last)
            job_id = await enqueue_job(conn, self._job(req, resolved.version, workspace_id), self.clock.now())
            preset_id = resolved.preset_id if req.preset_id else last.preset_id
            return await self._insert_build(
                conn,
                req,
                workspace_id,
                number,
                resolved.version.id,
                preset_id,
                resolved.parameters,
                last.state,
                job_id,
            )
        # stop and delete reuse what the last build had, without validation: they must always be possible.
        version = await store.version_by_id(conn, last.template_version_id)
        if version is None:  # the foreign key makes this impossible short of a broken database
            raise BuildError(INTERNAL, f"workspace {workspace.name}: its last build's version is gone")
        params = dict(last.parameters)
        if req.transition is Transition.DELETE and not await store.infrastructure_ever_ran(
            conn, workspace_id
        ):
            return await self._orphan_delete(conn, req, workspace_id, number, version, last, params)
        job_id = await enqueue_job(conn, self._job(req, version, workspace_id), self.clock.now())
        return await self._insert_build(
            conn, req, workspace_id, number, version.id, last.preset_id, params, last.state, job_id
        )

    async def _orphan_delete(
        self,
        conn: Conn,
        req: BuildRequest,
        workspace_id: UUID,
        number: int,
        version: BuildVersion,
        last: LastBuild,
        params: dict[str, str],
    ) -> BuildCreated:
        """Nothing was ever provisioned: record a delete that completed at once and mark the workspace deleted."""
        job_id = await record_finished_job(
            conn, self._job(req, version, workspace_id), self.clock.now(), error=None, failure_class=None
        )
        orphan = BuildRequest(**{**req.__dict__, "reason": BuildReason.ORPHAN_DELETE})
        created = await self._insert_build(
            conn,
            orphan,
            workspace_id,
            number,
            version.id,
            last.preset_id,
            params,
            last.state,
            job_id,
        )
        await store.mark_deleted(conn, workspace_id, self.clock.now())
        log.info("builder.orphan_delete", workspace_id=str(workspace_id))
        return BuildCreated(
            created.workspace_id, created.build_id, created.build_number, created.job_id, orphan_deleted=True
        )

    # -- inserts -------------------------------------------------------------------------------------------

    async def _insert_workspace(self, conn: Conn, req: BuildRequest, template: BuildTemplate) -> UUID:
        workspace = NewWorkspace(
            organization_id=req.organization_id or template.organization_id,
            owner_id=req.owner_id,
            template_id=template.id,
            name=req.name,
            pool_preset_id=req.preset_id if req.owner_id == PREBUILDS_USER_ID else None,
        )
        return await store.insert_workspace(conn, workspace, self.clock.now())

    @staticmethod
    def _job(req: BuildRequest, version: BuildVersion, workspace_id: UUID) -> NewJob:
        """The provisioner job of a build: run by a daemon of the version's provisioner and tags."""
        return NewJob(
            organization_id=version.organization_id,
            type=JobType.WORKSPACE_BUILD,
            provisioner=version.provisioner,
            priority=req.priority,
            input={"workspace_id": str(workspace_id)},
            initiator_id=req.initiator_id,
            tags=version.tags,
        )

    async def _insert_build(
        self,
        conn: Conn,
        req: BuildRequest,
        workspace_id: UUID,
        number: int,
        version_id: UUID,
        preset_id: UUID | None,
        parameters: Mapping[str, str],
        state: bytes | None,
        job_id: UUID,
    ) -> BuildCreated:
        build = NewBuild(
            workspace_id=workspace_id,
            build_number=number,
            transition=req.transition,
            version_id=version_id,
            preset_id=preset_id,
            parameters=parameters,
            state=state,
            initiator_id=req.initiator_id,
            reason=req.reason,
            job_id=job_id,
        )
        build_id = await store.insert_build(conn, build, self.clock.now())
        return BuildCreated(workspace_id=workspace_id, build_id=build_id, build_number=number, job_id=job_id)


def _conflict_message(exc: StoreConflict) -> str:
    constraint = exc.constraint
    if constraint == "workspaces_owner_name":
        return "a workspace with this name already exists for this owner"
    if constraint == "workspace_builds_workspace_id_build_number_key":
        return "another build of this workspace was created at the same time"
    return exc.message
