"""Jobs as operators see them: newest first, each pending one with the reason it waits when no daemon can run it.

A job no daemon can take is not a failure (SPEC §4): it waits, visibly. What daemons can take is, for now, what
the embedded daemons advertise (``provisioner.registry.offered_capabilities``); the reason itself is the pure
``domain.jobs.waiting_reason``.
"""

from __future__ import annotations

from uuid import UUID

from prebuildd.domain.jobs import Capabilities, waiting_reason
from prebuildd.store import jobs as store
from prebuildd.store.db import Database
from prebuildd.store.jobs import JobDetail, JobSummary, QueueDepth


async def list_jobs(
    db: Database, offered: Capabilities, *, organization_id: UUID, status: str | None, limit: int
) -> list[tuple[JobSummary, str | None]]:
    """The newest ``limit`` jobs (of one status when given), each with its waiting reason."""
    async with db.transaction() as conn:
        jobs = await store.list_jobs(conn, organization_id, status, limit)
    return [(job, waiting_reason(job, offered)) for job in jobs]


async def queue_depth(db: Database, organization_id: UUID) -> QueueDepth:
    """How many of the organization's jobs are pending and running, and the oldest pending one's creation."""
    async with db.transaction() as conn:
        return await store.queue_depth(conn, organization_id)


async def job_detail(db: Database, job_id: UUID) -> JobDetail | None:
    """One job, with its organization (for access checks), or None."""
    async with db.transaction() as conn:
        return await store.job_detail(conn, job_id)


async def job_organization(db: Database, job_id: UUID) -> UUID | None:
    """The organization a job belongs to, or None when there is no such job."""
    async with db.transaction() as conn:
        return await store.job_organization(conn, job_id)
