"""The Queue page's data: the organization's pending and running jobs, each pending one with the reason it waits
(``domain.jobs.waiting_reason``, as ``GET /api/v1/jobs``), the age of the oldest pending job, and the provisioner
daemons known to be online. Template admins and owners only (``jobs.read``), as the API.

The counts and the oldest age come from one aggregate, so they are right even when the lists are cut. What
daemons can take is what this server's embedded daemons offer (as for the API's waiting reasons); standalone
daemons register nowhere, so they are seen through the jobs they hold."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from prebuildd.api.context import Services
from prebuildd.api.lookups import organization_of
from prebuildd.dashboard.views.redact import mask_secrets
from prebuildd.domain.permissions import Action
from prebuildd.identity.users import User, require
from prebuildd.provisioner.registry import offered_capabilities
from prebuildd.queue.reads import list_jobs, queue_depth
from prebuildd.store.jobs import JobSummary

LISTED = 200
"""At most this many jobs of each status are listed (the page says when there are more)."""


@dataclass(frozen=True)
class QueuedJob:
    job: JobSummary
    waiting_reason: str | None
    age_seconds: float
    """Since it was queued (pending) or started (running)."""


@dataclass(frozen=True)
class Daemons:
    embedded_alive: int
    """Embedded daemons of this server running now."""
    embedded_configured: int
    kinds: list[str]
    """The provisioner kinds the embedded daemons take (empty: this server runs none)."""
    tags: dict[str, str]
    """The tags the embedded daemons offer."""
    busy_workers: list[str]
    """Worker ids holding the running jobs (embedded or standalone daemons)."""


@dataclass(frozen=True)
class QueueView:
    now: datetime
    pending: list[QueuedJob]
    """Oldest first: who has waited longest comes first."""
    running: list[QueuedJob]
    pending_total: int
    running_total: int
    oldest_pending_seconds: float | None
    daemons: Daemons

    @property
    def truncated(self) -> bool:
        return len(self.pending) < self.pending_total or len(self.running) < self.running_total

    @property
    def stuck(self) -> int:
        """Listed pending jobs that no known daemon can take."""
        return sum(1 for q in self.pending if q.waiting_reason)


def _age(now: datetime, since: datetime) -> float:
    return max((now - since).total_seconds(), 0.0)


async def queue_view(services: Services, user: User) -> QueueView:
    require(user, Action.JOBS_READ)
    organization_id = await organization_of(services, user)
    offered = offered_capabilities(services.config)
    now = services.clock.now()
    depth = await queue_depth(services.db, organization_id)
    listed: dict[str, list[QueuedJob]] = {}
    for status in ("pending", "running"):
        found = await list_jobs(
            services.db, offered, organization_id=organization_id, status=status, limit=LISTED
        )
        listed[status] = [
            QueuedJob(_shown(job), reason, _age(now, job.started_at or job.created_at))
            for job, reason in found
        ]
    pending = sorted(listed["pending"], key=lambda q: q.job.created_at)
    running = sorted(listed["running"], key=lambda q: q.job.started_at or q.job.created_at)
    registry = services.metrics.registry
    daemons = Daemons(
        embedded_alive=int(registry.get_sample_value("prebuildd_daemons_alive") or 0),
        embedded_configured=services.config.provisioner_daemons,
        kinds=sorted(offered.kinds),
        tags=dict(offered.tags),
        busy_workers=sorted({q.job.worker_id for q in running if q.job.worker_id}),
    )
    oldest = depth.oldest_pending_at
    return QueueView(
        now=now,
        pending=pending,
        running=running,
        pending_total=max(depth.pending, len(pending)),
        running_total=max(depth.running, len(running)),
        oldest_pending_seconds=None if oldest is None else _age(now, oldest),
        daemons=daemons,
    )


def _shown(job: JobSummary) -> JobSummary:
    if job.error is None:
        return job
    return replace(job, error=mask_secrets(job.error))
