"""The job repository: the one way a job enters the queue (builds, imports, refused builds recorded as failed).

The daemon-facing operations (acquire, heartbeat, complete) are the PostgreSQL queue adapter's, in
``prebuildd.queue.pg``; they use the statements of ``queries/jobs.sql`` too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from prebuildd.domain.jobs import FailureClass, JobType
from prebuildd.store.db import Conn
from prebuildd.store.rows import fetch_val, jsonb


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
