"""Provisioner job vocabulary: types, statuses, failure classes, priorities, the status rule, and why a pending
job waits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class JobType(StrEnum):
    TEMPLATE_VERSION_IMPORT = "template_version_import"
    WORKSPACE_BUILD = "workspace_build"


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CANCELING = "canceling"
    CANCELED = "canceled"
    FAILED = "failed"

    @property
    def is_active(self) -> bool:
        return self in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.CANCELING)


class FailureClass(StrEnum):
    BUILD = "build"
    """The infrastructure code failed."""
    CONFIG = "config"
    """The builder refused to create the build."""
    INFRASTRUCTURE = "infrastructure"
    """A missing tool, a provider download, a crashed provisioner: nothing the template author did."""
    DAEMON_LOST = "daemon_lost"
    """The job's daemon stopped responding (failed as stale) or restarted while it ran. Not the template's
    fault and not a reason to back off, unless it happens again and again (``domain.failures``)."""


class JobPriority:
    """Lower runs first: jobs started by people go before the reconciler's."""

    HUMAN = 0
    PREBUILD = 10


class Transition(StrEnum):
    START = "start"
    STOP = "stop"
    DELETE = "delete"


class BuildReason(StrEnum):
    INITIATOR = "initiator"
    PREBUILD = "prebuild"
    CLAIM = "claim"
    ORPHAN_DELETE = "orphan_delete"
    CLEANUP = "cleanup"


def job_status(
    *,
    started_at: datetime | None,
    canceled_at: datetime | None,
    completed_at: datetime | None,
    error: str | None,
) -> JobStatus:
    """The status rule of the `provisioner_jobs.job_status` generated column, for code that has the parts.

    The database computes the same thing; a test checks that both agree on every combination.
    """
    failed = bool(error)
    if completed_at is not None:
        if failed:
            return JobStatus.FAILED
        return JobStatus.CANCELED if canceled_at is not None else JobStatus.SUCCEEDED
    if failed:
        return JobStatus.FAILED
    if canceled_at is not None:
        return JobStatus.CANCELING
    return JobStatus.PENDING if started_at is None else JobStatus.RUNNING


@dataclass(frozen=True)
class Capabilities:
    """What the known daemons can run: provisioner kinds, and the tags they offer."""

    kinds: frozenset[str]
    tags: Mapping[str, str]


class QueuedJob(Protocol):
    """What ``waiting_reason`` reads of a job."""

    @property
    def job_status(self) -> str: ...
    @property
    def provisioner(self) -> str: ...
    @property
    def tags(self) -> Mapping[str, str]: ...


def waiting_reason(job: QueuedJob, offered: Capabilities) -> str | None:
    """Why the pending ``job`` cannot be taken by any known daemon, or None when one can take it."""
    if job.job_status != "pending":
        return None
    if job.provisioner not in offered.kinds:
        return f"no provisioner for kind {job.provisioner}"
    missing = {k: v for k, v in dict(job.tags or {}).items() if offered.tags.get(k) != v}
    if missing:
        tags = ", ".join(f"{k}={v}" for k, v in sorted(missing.items()))
        return f"no provisioner offering tags {tags}"
    return None
