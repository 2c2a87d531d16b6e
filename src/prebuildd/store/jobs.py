"""The job repository: the one way a job enters the queue (builds, imports, refused builds recorded as failed),
the statements of the PostgreSQL queue (``prebuildd.queue.pg``: acquire, heartbeat, logs, complete, cancel, stale
jobs) and jobs as operators see them. Rows come back as frozen dataclasses; nothing outside knows a query name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from prebuildd.domain.jobs import FailureClass, JobType
from prebuildd.store.db import Conn
from prebuildd.store.rows import execute, fetch_all, fetch_all_as, fetch_one, fetch_val, jsonb


@dataclass(frozen=True)
class NewJob:
    """A job to queue: what it is, who may run it, and its input."""

    organization_id: UUID
    type: JobType
    provisioner: str
    priority: int  # a JobPriority value (its members are plain ints)
    input: Mapping[str, Any]
    initiator_id: UUID | None
    tags: Mapping[str, str] = field(default_factory=dict)


async def enqueue_job(conn: Conn, job: NewJob, now: datetime) -> UUID:
    """Queue ``job`` in the caller's transaction; idle daemons are woken when it commits."""
    job_id: UUID = await fetch_val(conn, "jobs.insert", _params(job, now))
    return job_id


async def record_finished_job(
    conn: Conn, job: NewJob, now: datetime, *, error: str | None, failure_class: FailureClass | None
) -> UUID:
    """A job that never runs: a refused build recorded as failed (``error`` set), or an orphan delete."""
    params = _params(job, now) | {
        "error": error,
        "failure_class": failure_class.value if failure_class else None,
    }
    job_id: UUID = await fetch_val(conn, "jobs.insert_completed", params)
    return job_id


def _params(job: NewJob, now: datetime) -> dict[str, Any]:
    return {
        "id": uuid4(),
        "organization_id": job.organization_id,
        "type": job.type.value,
        "provisioner": job.provisioner,
        "tags": jsonb(dict(job.tags)),
        "priority": job.priority,
        "input": jsonb(dict(job.input)),
        "initiator_id": job.initiator_id,
        "now": now,
    }


# -- the queue's statements (``prebuildd.queue.pg``): one function per statement, the same round trips ------


@dataclass(frozen=True)
class AcquiredJobRow:
    """A job a worker has just taken (``started_at`` and ``worker_id`` are set), with what it runs: the version's
    manifest and archive, and for a build job its build (None when the job names no build or version: the
    database broke an invariant)."""

    id: UUID
    type: JobType
    provisioner: str
    version_id: UUID | None
    """The version an import job imports, or a build's version."""
    manifest: str | None
    source: bytes | None
    source_hash: str | None
    build: BuildForJob | None


@dataclass(frozen=True)
class BuildForJob:
    """Everything a daemon needs to run a build job: the build, its workspace, template and version."""

    build_id: UUID
    build_number: int
    transition: str
    parameters: Mapping[str, str]
    reason: str
    previous_state: bytes | None
    workspace_id: UUID
    workspace_name: str
    owner_id: UUID
    owner_name: str
    is_prebuild: bool
    template_name: str
    version_id: UUID
    manifest: str
    source: bytes
    source_hash: str
    agents: list[str]
    preset_name: str | None


@dataclass(frozen=True)
class CompletedJob:
    """A job just completed by its worker."""

    id: UUID
    type: JobType
    job_status: str
    workspace_id: str | None
    """The build's workspace (from the job's input), for the completion notification."""


@dataclass(frozen=True)
class FinishedBuild:
    workspace_id: UUID
    transition: str
    build_number: int


@dataclass(frozen=True)
class StaleJob:
    id: UUID
    type: JobType
    workspace_id: str | None


@dataclass(frozen=True)
class JobLogLine:
    """One stored line of a job's log; ``id`` orders them and is the cursor of ``after``."""

    id: int
    created_at: datetime
    level: str
    stage: str
    output: str


@dataclass(frozen=True)
class JobSummary:
    """A job as operators see it (``GET /jobs``)."""

    id: UUID
    type: str
    provisioner: str
    job_status: str
    error: str | None
    failure_class: str | None
    priority: int
    tags: Mapping[str, str]
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    worker_id: str | None
    initiator_id: UUID | None


@dataclass(frozen=True)
class JobDetail(JobSummary):
    """A job with the organization it belongs to (for access checks)."""

    organization_id: UUID


async def acquire(
    conn: Conn,
    worker_id: str,
    kinds: Sequence[str],
    tags: Mapping[str, str],
    now: datetime,
    prebuilds_user_id: UUID,
    *,
    organization_id: UUID | None = None,
) -> AcquiredJobRow | None:
    """Take the next pending job this worker can run (human jobs first, then oldest) with what it runs, in one
    statement; None when there is none. With ``organization_id``, only a job of that organization."""
    row = await fetch_one(
        conn,
        "jobs.acquire",
        {
            "now": now,
            "worker_id": worker_id,
            "kinds": list(kinds),
            "tags": jsonb(dict(tags)),
            "prebuilds_user_id": prebuilds_user_id,
            "organization_id": organization_id,
        },
        prepare=True,
    )
    if row is None:
        return None
    build = None
    if row["build_id"] is not None and row["manifest"] is not None:
        build = BuildForJob(
            build_id=row["build_id"],
            build_number=row["build_number"],
            transition=row["transition"],
            parameters=row["parameters"],
            reason=row["reason"],
            previous_state=row["previous_state"],
            workspace_id=row["workspace_id"],
            workspace_name=row["workspace_name"],
            owner_id=row["owner_id"],
            owner_name=row["owner_name"],
            is_prebuild=row["is_prebuild"],
            template_name=row["template_name"],
            version_id=row["version_id"],
            manifest=row["manifest"],
            source=row["source"],
            source_hash=row["source_hash"],
            agents=row["agents"],
            preset_name=row["preset_name"],
        )
    return AcquiredJobRow(
        row["id"],
        JobType(row["type"]),
        row["provisioner"],
        row["version_id"],
        row["manifest"],
        row["source"],
        row["source_hash"],
        build,
    )


@dataclass(frozen=True)
class PendingKind:
    provisioner: str
    tags: Mapping[str, str]


async def pending_kinds(conn: Conn) -> list[PendingKind]:
    """The provisioners and tags of pending jobs (at most 100 combinations)."""
    rows = await fetch_all(conn, "jobs.pending_kinds")
    return [PendingKind(r["provisioner"], r["tags"]) for r in rows]


async def issue_agent_tokens(
    conn: Conn, workspace_id: UUID, names: Sequence[str], token_hashes: Sequence[bytes], now: datetime
) -> None:
    """New tokens for declared agents of a workspace, one statement; each agent starts over from ``created``."""
    await execute(
        conn,
        "agents.issue_tokens",
        {"workspace_id": workspace_id, "names": list(names), "token_hashes": list(token_hashes), "now": now},
    )


async def heartbeat(conn: Conn, job_id: UUID, worker_id: str, now: datetime) -> bool | None:
    """Keep a job alive: whether it was canceled, or None when the worker no longer holds it."""
    row = await fetch_one(
        conn, "jobs.heartbeat", {"id": job_id, "worker_id": worker_id, "now": now}, prepare=True
    )
    return None if row is None else bool(row["canceled"])


async def append_logs(
    conn: Conn,
    job_id: UUID,
    worker_id: str,
    now: datetime,
    *,
    levels: list[str],
    stages: list[str],
    outputs: list[str],
) -> None:
    """Append lines to a job held by ``worker_id`` (nothing is written otherwise), in one statement."""
    await execute(
        conn,
        "jobs.insert_logs",
        {
            "job_id": job_id,
            "worker_id": worker_id,
            "created_at": [now] * len(outputs),
            "levels": levels,
            "stages": stages,
            "outputs": outputs,
        },
    )


@dataclass(frozen=True)
class Completion:
    """How a worker ends a job, as the completion statements take it."""

    job_id: UUID
    worker_id: str
    now: datetime
    error: str | None
    failure_class: FailureClass | None

    def params(self) -> dict[str, Any]:
        return {
            "id": self.job_id,
            "worker_id": self.worker_id,
            "now": self.now,
            "error": self.error,
            "failure_class": self.failure_class.value if self.failure_class else None,
        }


@dataclass(frozen=True)
class CompletedBuild:
    """A build job ``complete_build`` completed: its status, its build's reason, when the job was queued."""

    status: str
    reason: str | None
    created_at: datetime


async def complete_build(
    conn: Conn, completion: Completion, state: bytes | None, outputs: Mapping[str, Any]
) -> CompletedBuild | None:
    """Complete a build job, store its result and notify, in one statement; None when the job is not a build
    held by this worker (nothing is written; the caller takes ``complete``)."""
    row = await fetch_one(
        conn,
        "jobs.complete_build",
        {**completion.params(), "state": state, "outputs": jsonb(dict(outputs))},
        prepare=True,
    )
    if row is None:
        return None
    return CompletedBuild(str(row["job_status"]), row["reason"], row["created_at"])


async def complete(conn: Conn, completion: Completion) -> CompletedJob | None:
    """Complete a job held by this worker, or None when it no longer is (a job failed as stale stays failed)."""
    row = await fetch_one(conn, "jobs.complete", completion.params())
    if row is None:
        return None
    return CompletedJob(row["id"], JobType(row["type"]), row["job_status"], row["input"].get("workspace_id"))


async def completed_by_worker(conn: Conn, job_id: UUID, worker_id: str) -> bool:
    """Whether ``worker_id`` itself completed the job (not a failure for a lost daemon while it held it)."""
    return bool(await fetch_val(conn, "jobs.completed_by_worker", {"id": job_id, "worker_id": worker_id}))


async def fail_earlier_runs(
    conn: Conn,
    identity: str,
    worker_id: str,
    now: datetime,
    *,
    key_suffix: str | None = None,
    organization_id: UUID | None = None,
) -> list[StaleJob]:
    """Fail (class daemon_lost) the running jobs of earlier runs of ``identity``: every worker id
    ``<identity>#…`` but ``worker_id``, bound to ``key_suffix`` when given (standalone daemons), else unbound."""
    rows = await fetch_all(
        conn,
        "jobs.fail_earlier_runs",
        {
            "identity": identity,
            "worker_id": worker_id,
            "now": now,
            "key_suffix": key_suffix,
            "organization_id": organization_id,
        },
    )
    return [StaleJob(row["id"], JobType(row["type"]), row["input"].get("workspace_id")) for row in rows]


async def set_error(conn: Conn, job_id: UUID, error: str, failure_class: FailureClass, now: datetime) -> None:
    await execute(
        conn,
        "jobs.set_error",
        {"id": job_id, "error": error, "failure_class": failure_class.value, "now": now},
    )


async def finish_build(
    conn: Conn, job_id: UUID, state: bytes | None, outputs: Mapping[str, Any], now: datetime
) -> FinishedBuild | None:
    row = await fetch_one(
        conn,
        "workspaces.finish_build",
        {"job_id": job_id, "state": state, "outputs": jsonb(dict(outputs)), "now": now},
    )
    return None if row is None else FinishedBuild(row["workspace_id"], row["transition"], row["build_number"])


async def mark_workspace_deleted(conn: Conn, workspace_id: UUID, now: datetime) -> None:
    await execute(conn, "workspaces.mark_deleted", {"id": workspace_id, "now": now})


async def keep_failed_state(conn: Conn, job_id: UUID, state: bytes, now: datetime) -> None:
    """A failed build keeps the state it reported, so that its delete can clean up."""
    await execute(conn, "workspaces.keep_failed_state", {"job_id": job_id, "state": state, "now": now})


async def notify_completed(conn: Conn, job_id: UUID, job_type: str | None, workspace_id: str | None) -> None:
    """Wake whoever waits for this job (the reconciler, log followers) when the transaction commits."""
    payload = json.dumps({"job_id": str(job_id), "type": job_type, "workspace_id": workspace_id})
    await execute(conn, "jobs.notify_completed", {"payload": payload})


async def cancel(conn: Conn, job_id: UUID, now: datetime) -> str | None:
    """Cancel a job: its status afterwards (``canceled`` or ``canceling``), or None when it already finished."""
    row = await fetch_one(conn, "jobs.cancel", {"id": job_id, "now": now})
    return None if row is None else str(row["job_status"])


async def release(conn: Conn, job_id: UUID, worker_id: str, now: datetime) -> bool:
    """Put a job held by ``worker_id`` back in the queue; False when it does not hold it any more."""
    return (
        await fetch_one(conn, "jobs.release", {"id": job_id, "worker_id": worker_id, "now": now}) is not None
    )


async def fail_stale(conn: Conn, now: datetime, cutoff: datetime) -> list[StaleJob]:
    """Fail the running jobs with no heartbeat since ``cutoff`` (class daemon_lost)."""
    rows = await fetch_all(conn, "jobs.fail_stale", {"now": now, "cutoff": cutoff})
    return [StaleJob(row["id"], JobType(row["type"]), row["input"].get("workspace_id")) for row in rows]


async def logs_after(conn: Conn, job_id: UUID, after: int, limit: int) -> list[JobLogLine]:
    return await fetch_all_as(
        conn, "jobs.logs_after", {"job_id": job_id, "after": after, "limit": limit}, JobLogLine
    )


# -- jobs as operators see them ------------------------------------------------------------------------------


async def list_jobs(conn: Conn, organization_id: UUID, status: str | None, limit: int) -> list[JobSummary]:
    """The newest ``limit`` jobs of an organization (of one status when given)."""
    return await fetch_all_as(
        conn, "api.jobs", {"organization_id": organization_id, "status": status, "limit": limit}, JobSummary
    )


@dataclass(frozen=True)
class QueueDepth:
    """How many jobs of an organization wait and run, and since when the oldest one waits."""

    pending: int
    running: int
    oldest_pending_at: datetime | None


async def queue_depth(conn: Conn, organization_id: UUID) -> QueueDepth:
    row = await fetch_one(conn, "api.queue_depth", {"organization_id": organization_id})
    assert row is not None  # an aggregate always answers one row
    return QueueDepth(**row)


async def job_detail(conn: Conn, job_id: UUID) -> JobDetail | None:
    row = await fetch_one(conn, "api.job_by_id", {"id": job_id})
    return None if row is None else JobDetail(**row)


async def job_status(conn: Conn, job_id: UUID) -> str | None:
    status: str | None = await fetch_val(conn, "api.job_status", {"id": job_id})
    return status


async def job_organization(conn: Conn, job_id: UUID) -> UUID | None:
    """The organization a job belongs to (daemon endpoints check it against their key's)."""
    organization_id: UUID | None = await fetch_val(conn, "auth.job_organization", {"id": job_id})
    return organization_id
