"""Request and response bodies of the users, templates, workspaces and jobs endpoints (docs/api.md).

Names and free text are checked here, before they reach a query: a bad name is a 400 that says which names are
allowed, and text PostgreSQL cannot store (NUL characters, lone surrogates) is refused the same way. Each
response model builds itself from the row its query returns (``from_row``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, cast
from uuid import UUID

from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError

from prebuildd.store.identity import Token, User
from prebuildd.store.jobs import JobLogLine, JobSummary
from prebuildd.store.templates import PresetListing, Template, TemplateVersion
from prebuildd.store.workspaces import BuildView, WorkspaceView

# -- names and text ----------------------------------------------------------------------------------------

TEMPLATE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
WORKSPACE_NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$"
USERNAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
VERSION_NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
TEXT_PATTERN = r"^[^\x00]*$"
MAX_NAME = 64


def _name_checker(kind: str, pattern: str, allowed: str, max_length: int) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if len(value) > max_length or not compiled.match(value):
            raise PydanticCustomError(
                "invalid_name",
                "invalid {kind} name '{value}': {allowed}, at most {max_length} characters",
                {"kind": kind, "value": value[:100], "allowed": allowed, "max_length": max_length},
            )
        return value

    return AfterValidator(check)


def _name_schema(pattern: str, max_length: int = MAX_NAME) -> Any:
    return Field(min_length=1, json_schema_extra={"pattern": pattern, "maxLength": max_length})


def _storable(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("invalid_text", "must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise PydanticCustomError("invalid_text", "must be valid Unicode text") from None
    return value


TemplateName = Annotated[
    str,
    _name_schema(TEMPLATE_NAME_PATTERN),
    _name_checker(
        "template",
        TEMPLATE_NAME_PATTERN,
        "use lowercase letters, digits, '-' and '_', starting with a letter or digit",
        MAX_NAME,
    ),
]
WorkspaceName = Annotated[
    str,
    _name_schema(WORKSPACE_NAME_PATTERN),
    _name_checker(
        "workspace",
        WORKSPACE_NAME_PATTERN,
        "use letters, digits, '-' and '_', starting with a letter or digit",
        MAX_NAME,
    ),
]
Username = Annotated[
    str,
    _name_schema(USERNAME_PATTERN, 63),
    _name_checker(
        "user", USERNAME_PATTERN, "use letters, digits, '.', '_' and '-', starting with a letter or digit", 63
    ),
]
VersionName = Annotated[
    str,
    _name_schema(VERSION_NAME_PATTERN),
    _name_checker("version", VERSION_NAME_PATTERN, "versions are named v1, v2, …", MAX_NAME),
]


def _text_schema(max_length: int, min_length: int = 0) -> Any:
    return Field(min_length=min_length, max_length=max_length, json_schema_extra={"pattern": TEXT_PATTERN})


ShortText = Annotated[str, _text_schema(200), AfterValidator(_storable)]
LongText = Annotated[str, _text_schema(2000), AfterValidator(_storable)]
TokenName = Annotated[str, _text_schema(100, min_length=1), AfterValidator(_storable)]
LookupText = Annotated[str, _text_schema(128, min_length=1), AfterValidator(_storable)]
"""A name to look up (a preset, or a template where the old lookups take any text): storable, not empty."""
PresetName = LookupText

ParameterValue = str | int | float | bool | list[str] | None


def _storable_parameters(values: dict[str, ParameterValue]) -> dict[str, ParameterValue]:
    for name, value in values.items():
        _storable(name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                _storable(item)
    return values


Parameters = Annotated[
    dict[str, ParameterValue],
    Field(
        max_length=200, description="Parameter values by name: strings, numbers, bools or lists of strings."
    ),
    AfterValidator(_storable_parameters),
]

Role = Literal["owner", "template-admin", "member"]

# -- users and tokens --------------------------------------------------------------------------------------


class UserOut(BaseModel):
    id: UUID
    username: str
    email: str
    role: Role = Field(description="The user's role in the organization the request acts in")
    organization: UUID | None = Field(default=None, description="The organization the role is in")
    site_owner: bool = False
    suspended: bool
    created_at: datetime

    @classmethod
    def from_user(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            username=user.username,
            email=user.email,
            role=cast(Role, user.role or "member"),
            organization=user.organization_id,
            site_owner=user.site_owner,
            suspended=user.suspended,
            created_at=user.created_at,
        )


class UserCreate(BaseModel):
    username: Username
    email: ShortText = ""
    role: Role = "member"


class UserUpdate(BaseModel):
    role: Role | None = None
    suspended: bool | None = Field(
        default=None, description="A suspended user's tokens stop working at once."
    )


class OrganizationOut(BaseModel):
    id: UUID
    name: str
    display_name: str
    is_default: bool
    role: Role = Field(description="Your role in it (the site owner acts as an owner everywhere)")
    created_at: datetime


OrganizationName = Annotated[
    str,
    Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$", description="lowercase, digits, '-'"),
]


class OrganizationCreate(BaseModel):
    name: OrganizationName
    display_name: ShortText = ""


class OrganizationUpdate(BaseModel):
    name: OrganizationName | None = None
    display_name: ShortText | None = None


class MemberSet(BaseModel):
    role: Role = "member"


class TokenOut(BaseModel):
    id: UUID
    name: str
    user_id: UUID
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_token(cls, token: Token) -> TokenOut:
        return cls(
            id=token.id,
            name=token.name,
            user_id=token.user_id,
            created_at=token.created_at,
            expires_at=token.expires_at,
            last_used_at=token.last_used_at,
            revoked_at=token.revoked_at,
        )


MAX_TOKEN_LIFETIME = 10 * 365 * 86400


class TokenCreate(BaseModel):
    name: TokenName
    lifetime_seconds: int | None = Field(
        default=None, ge=60, le=MAX_TOKEN_LIFETIME, description="null: the token does not expire."
    )
    username: Username | None = Field(
        default=None, description="Owners only: create the token for this user."
    )


class CreatedToken(BaseModel):
    token: TokenOut
    secret: str = Field(description="The token itself (pbt_…): shown once, stored only as a hash.")


# -- templates, versions, presets --------------------------------------------------------------------------


class TemplateOut(BaseModel):
    id: UUID
    name: str
    display_name: str
    description: str
    active_version: str | None
    active_version_id: UUID | None
    deprecated: bool
    deprecation_message: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_template(cls, template: Template) -> TemplateOut:
        return cls(
            id=template.id,
            name=template.name,
            display_name=template.display_name,
            description=template.description,
            active_version=template.active_version,
            active_version_id=template.active_version_id,
            deprecated=template.deprecated_at is not None,
            deprecation_message=template.deprecation_message,
            created_at=template.created_at,
            updated_at=template.updated_at,
        )


class TemplateUpdate(BaseModel):
    active_version: VersionName | None = Field(
        default=None, description="Make this version (e.g. v3) active."
    )
    deprecated: bool | None = Field(default=None, description="Deprecated templates take no new workspaces.")
    deprecation_message: LongText | None = Field(default=None, description="What to use instead.")


class PushedVersionOut(BaseModel):
    template: str
    template_id: UUID
    version: str
    version_id: UUID
    job_id: UUID
    warnings: list[str]
    created_template: bool


class VersionOut(BaseModel):
    id: UUID
    name: str
    template: str
    message: str
    provisioner: str
    import_status: str
    import_error: str | None
    warnings: list[str]
    active: bool
    created_at: datetime
    job_id: UUID
    parameters: list[dict[str, Any]] | None = Field(
        default=None, description="The declared parameters (single-version requests only)."
    )

    @classmethod
    def from_version(
        cls, version: TemplateVersion, parameters: list[dict[str, Any]] | None = None
    ) -> VersionOut:
        return cls(
            id=version.id,
            name=version.name,
            template=version.template,
            message=version.message,
            provisioner=version.provisioner,
            import_status=version.import_status,
            import_error=version.import_error,
            warnings=list(version.warnings or []),
            active=version.active,
            created_at=version.created_at,
            job_id=version.job_id,
            parameters=parameters,
        )


class ScheduleOut(BaseModel):
    cron: str
    instances: int


class PresetOut(BaseModel):
    id: UUID
    name: str
    description: str
    version: str
    parameters: dict[str, str]
    desired_instances: int | None = Field(description="null: the preset has no pool.")
    ttl_seconds: int = Field(description="0: prebuilds do not expire.")
    timezone: str
    schedules: list[ScheduleOut]
    prebuild_status: str = Field(description="healthy or hard_limited")
    prebuild_status_reason: str | None = Field(description="Why it is hard-limited: config or build.")
    prebuild_last_error: str | None

    @classmethod
    def from_preset(cls, preset: PresetListing) -> PresetOut:
        return cls(
            id=preset.id,
            name=preset.name,
            description=preset.description,
            version=preset.version,
            parameters=dict(preset.parameters),
            desired_instances=preset.desired_instances,
            ttl_seconds=preset.ttl_seconds,
            timezone=preset.timezone,
            schedules=[ScheduleOut(cron=s.cron, instances=s.instances) for s in preset.schedules],
            prebuild_status=preset.prebuild_status,
            prebuild_status_reason=preset.prebuild_status_reason,
            prebuild_last_error=preset.prebuild_last_error,
        )


class LogLineOut(BaseModel):
    id: int
    created_at: datetime
    level: str
    stage: str
    output: str

    @classmethod
    def from_line(cls, line: JobLogLine) -> LogLineOut:
        return cls(
            id=line.id,
            created_at=line.created_at,
            level=line.level,
            stage=line.stage,
            output=line.output,
        )


# -- workspaces and builds ---------------------------------------------------------------------------------

Transition = Literal["start", "stop", "delete"]


class BuildOut(BaseModel):
    id: UUID
    workspace_id: UUID
    build_number: int
    transition: Transition
    status: str = Field(description="The status of the build's job: pending, running, succeeded, failed, …")
    error: str | None
    failure_class: str | None
    version: str
    preset: str | None
    parameters: dict[str, str]
    outputs: dict[str, Any]
    reason: str
    created_at: datetime
    completed_at: datetime | None
    job_id: UUID

    @classmethod
    def from_build(cls, build: BuildView) -> BuildOut:
        return cls(
            id=build.id,
            workspace_id=build.workspace_id,
            build_number=build.build_number,
            transition=build.transition,  # type: ignore[arg-type]  # the table's check constraint
            status=build.status,
            error=build.error,
            failure_class=build.failure_class,
            version=build.version,
            preset=build.preset,
            parameters=dict(build.parameters),
            outputs=dict(build.outputs),
            reason=build.reason,
            created_at=build.created_at,
            completed_at=build.completed_at,
            job_id=build.job_id,
        )


class WorkspaceOut(BaseModel):
    id: UUID
    name: str
    owner: str
    owner_id: UUID
    template: str
    template_id: UUID
    created_at: datetime
    deleted: bool
    latest_build: BuildOut | None
    claimed: bool | None = Field(
        default=None, description="Only in a creation's answer: true when a ready prebuild was handed over"
    )
    seconds: float | None = Field(default=None, description="Only in a creation's answer: how long it took")

    @classmethod
    def from_workspace(cls, workspace: WorkspaceView) -> WorkspaceOut:
        build = workspace.latest_build
        return cls(
            id=workspace.id,
            name=workspace.name,
            owner=workspace.owner,
            owner_id=workspace.owner_id,
            template=workspace.template,
            template_id=workspace.template_id,
            created_at=workspace.created_at,
            deleted=workspace.deleted,
            latest_build=BuildOut.from_build(build) if build is not None else None,
        )


class WorkspaceCreate(BaseModel):
    name: WorkspaceName
    template: TemplateName
    preset: PresetName | None = Field(default=None, description="A preset of the template's active version.")
    parameters: Parameters = Field(default_factory=dict)
    owner: Username | None = Field(default=None, description="Template admins: create it for this user.")


class BuildCreate(BaseModel):
    transition: Transition
    parameters: Parameters = Field(default_factory=dict, description="start only: new values for parameters.")


class LogEnd(BaseModel):
    """The last line of a followed log stream."""

    end: Literal[True] = True
    status: str


# -- jobs and settings -------------------------------------------------------------------------------------


class JobOut(BaseModel):
    id: UUID
    type: str
    provisioner: str
    status: str
    error: str | None
    failure_class: str | None
    priority: int
    tags: dict[str, str]
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    worker_id: str | None
    waiting_reason: str | None = Field(
        description="Why a pending job is not taken, when no daemon can run it."
    )

    @classmethod
    def from_job(cls, job: JobSummary, waiting_reason: str | None) -> JobOut:
        return cls(
            id=job.id,
            type=job.type,
            provisioner=job.provisioner,
            status=job.job_status,
            error=job.error,
            failure_class=job.failure_class,
            priority=job.priority,
            tags=dict(job.tags),
            created_at=job.created_at,
            started_at=job.started_at,
            completed_at=job.completed_at,
            worker_id=job.worker_id,
            waiting_reason=waiting_reason,
        )


class Settings(BaseModel):
    reconciliation_paused: bool
