"""Request and response bodies of the provisioner-key and standalone-daemon endpoints, and their conversions.

The daemon endpoints carry the queue's dataclasses (``AcquiredJob``, ``JobOutcome``) as JSON: bytes as base64,
parameter declarations in ``ParameterSpec.to_json`` form. The client half of this wire format lives in
``prebuildd.queue.http`` (the daemon must not import the API); a test round-trips both halves.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from prebuildd.api.models import ShortText
from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.domain.jobs import FailureClass
from prebuildd.domain.parameters import ParameterSpec
from prebuildd.queue.port import AcquiredJob, JobOutcome, LogLine

KEY_NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$"
MAX_WAIT_SECONDS = 30.0

Tags = dict[ShortText, ShortText]
"""Tag keys and values: text PostgreSQL can store (no NUL), at most 200 characters."""


# -- provisioner keys --------------------------------------------------------------------------------------


class ProvisionerKeyIn(BaseModel):
    name: str = Field(pattern=KEY_NAME_PATTERN, description="Letters, digits, '.', '_' and '-' (max 63)")
    tags: Tags = Field(
        default_factory=dict,
        max_length=50,
        description="The most a daemon using this key may offer: its tags must be a subset of these.",
    )
    site_wide: bool = Field(
        default=False, description="A key of no organization, serving every organization (site owner only)."
    )


class ProvisionerKeyOut(BaseModel):
    id: UUID
    organization_id: UUID | None = Field(default=None, description="None: a site-wide key")
    name: str
    tags: Tags
    created_at: datetime
    revoked_at: datetime | None = None


class CreatedProvisionerKey(BaseModel):
    key: ProvisionerKeyOut
    secret: str = Field(description="The key itself (pbk_…): shown once, stored only as a hash.")


# -- daemon endpoints --------------------------------------------------------------------------------------


class WorkerIn(BaseModel):
    worker_id: str = Field(min_length=1, max_length=200)


class AcquireIn(WorkerIn):
    kinds: list[str] = Field(min_length=1, max_length=20, description="Provisioner kinds the daemon can run.")
    tags: Tags = Field(default_factory=dict, max_length=50)
    wait_seconds: float = Field(
        default=0.0,
        ge=0,
        description=f"Long poll: wait up to this long for a job (capped at {MAX_WAIT_SECONDS:g}).",
    )


class BuildPayloadOut(BaseModel):
    build_id: UUID
    build_number: int
    transition: str
    reason: str
    parameters: dict[str, str]
    state: str | None = Field(description="Base64 state of the previous build, or null.")
    workspace_id: UUID
    workspace_name: str
    owner_id: UUID
    owner_name: str
    template_name: str
    version_id: UUID
    preset_name: str | None
    is_prebuild: bool
    agent_tokens: dict[str, str] = Field(
        default_factory=dict, description="Start builds: a fresh token per declared agent, by agent name."
    )


class AcquiredJobOut(BaseModel):
    id: UUID
    type: str
    provisioner: str
    manifest: str
    source: str = Field(description="Base64 of the version's files (a gzip'd tar).")
    source_hash: str
    version_id: UUID | None
    build: BuildPayloadOut | None


class HeartbeatOut(BaseModel):
    status: Literal["ok", "canceled", "lost"]


LogLevel = Literal["trace", "debug", "info", "warn", "error"]
"""`queue.port.LOG_LEVELS` (a test checks they are the same)."""


class LogLineIn(BaseModel):
    level: LogLevel = Field(description="Anything else is refused (400 naming the line).")
    stage: str = Field(max_length=100)
    output: str = Field(description="NUL characters are stored as U+FFFD (PostgreSQL text holds no NUL).")


class LogsIn(WorkerIn):
    lines: list[LogLineIn] = Field(max_length=5000)


class OutcomeIn(BaseModel):
    error: str | None = None
    failure_class: FailureClass | None = None
    canceled: bool = False
    state: str | None = Field(default=None, description="Base64 state the build leaves, or null.")
    outputs: dict[str, Any] = Field(default_factory=dict)
    parameters: list[dict[str, Any]] = Field(
        default_factory=list, description="Import jobs: declared parameters (ParameterSpec JSON)."
    )
    warnings: list[str] = Field(default_factory=list)


class CompleteIn(WorkerIn):
    outcome: OutcomeIn


class CompleteOut(BaseModel):
    accepted: bool = Field(
        description="False when the job was no longer this daemon's (failed as stale or for a restart, or "
        "completed by another daemon). True again for a repeated completion by the daemon that completed it."
    )


IDENTITY_PATTERN = r"^[^#@\x00-\x1f]{1,160}$"


class RegisterIn(WorkerIn):
    identity: str = Field(
        pattern=IDENTITY_PATTERN,
        description="The daemon's identity, stable across its restarts; worker_id must be `<identity>#<run>`.",
    )


class RegisterOut(BaseModel):
    failed_jobs: list[UUID] = Field(
        description="Running jobs of earlier runs of this identity, failed now (class daemon_lost)."
    )


# -- conversions -------------------------------------------------------------------------------------------


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None, field: str) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PrebuilddError(
            ErrorCode.INVALID_REQUEST,
            f"{field}: not valid base64",
            [{"field": field, "problem": "not base64"}],
        ) from None


def acquired_job_out(job: AcquiredJob) -> AcquiredJobOut:
    build = None
    if job.build is not None:
        b = job.build
        build = BuildPayloadOut(
            build_id=b.build_id,
            build_number=b.build_number,
            transition=b.transition.value,
            reason=str(b.reason),
            parameters=dict(b.parameters),
            state=_b64(b.state),
            workspace_id=b.workspace_id,
            workspace_name=b.workspace_name,
            owner_id=b.owner_id,
            owner_name=b.owner_name,
            template_name=b.template_name,
            version_id=b.version_id,
            preset_name=b.preset_name,
            is_prebuild=b.is_prebuild,
            agent_tokens=dict(b.agent_tokens),
        )
    return AcquiredJobOut(
        id=job.id,
        type=job.type.value,
        provisioner=job.provisioner,
        manifest=job.manifest,
        source=_b64(job.source) or "",
        source_hash=job.source_hash,
        version_id=job.version_id,
        build=build,
    )


def job_outcome(body: OutcomeIn) -> JobOutcome:
    parameters = []
    for i, spec in enumerate(body.parameters):
        try:
            parameters.append(ParameterSpec.from_json(spec))
        except (KeyError, TypeError, ValueError) as exc:
            field = f"outcome.parameters.{i}"
            raise PrebuilddError(
                ErrorCode.INVALID_REQUEST, f"{field}: {exc}", [{"field": field, "problem": str(exc)}]
            ) from None
    return JobOutcome(
        error=body.error,
        failure_class=body.failure_class,
        canceled=body.canceled,
        state=_unb64(body.state, "outcome.state"),
        outputs=body.outputs,
        parameters=tuple(parameters),
        warnings=tuple(body.warnings),
    )


def log_lines(body: LogsIn) -> list[LogLine]:
    return [LogLine(line.level, line.stage, line.output) for line in body.lines]
