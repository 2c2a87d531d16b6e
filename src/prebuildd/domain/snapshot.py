"""From the rows of the global snapshot to one ``PresetSnapshot`` per preset (pure; SPEC §5 step 3).

The reconciler reads two row sets in one read-only transaction, whatever the number of presets: the presets with
pools (and any preset that still has prebuilds), and the latest build of every prebuild. Everything else (running,
starting, leftovers, pending creates of inactive versions, evidence of failures, jobs in flight) is derived here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from prebuildd.domain.planner import (
    CleanupReason,
    Leftover,
    PendingCreate,
    PresetSnapshot,
    RunningCounts,
    RunningPrebuild,
)
from prebuildd.domain.schedules import Schedule

ACTIVE_STATUSES = ("pending", "running", "canceling")


@dataclass(frozen=True, slots=True)
class PresetRow:
    preset_id: UUID
    preset_name: str
    template_id: UUID
    template_name: str
    organization_id: UUID
    version_id: UUID
    version_name: str
    active: bool
    desired_instances: int | None
    ttl_seconds: int = 0
    timezone: str = "UTC"
    schedules: tuple[Schedule, ...] = ()
    last_invalidated_at: datetime | None = None
    failures_reset_at: datetime | None = None
    prebuild_status: str = "healthy"
    consecutive_failures: int = 0
    last_failure_at: datetime | None = None
    last_error: str = ""
    autoscale: dict[str, Any] | None = None
    """The autoscaler's settings (``AutoscaleSettings.as_dict``), None when the pool does not autoscale."""
    target_expression: str | None = None
    autoscale_target: int | None = None
    autoscale_raised_at: datetime | None = None
    autoscale_changed_at: datetime | None = None
    organization_name: str = ""
    """What the per-preset metrics are labelled with (an organization's id means nothing to an operator)."""


@dataclass(frozen=True, slots=True)
class PrebuildRow:
    """The latest build of one prebuild workspace, with its job."""

    workspace_id: UUID
    workspace_created_at: datetime
    preset_id: UUID | None
    version_id: UUID
    transition: str
    job_id: UUID
    job_status: str
    build_created_at: datetime
    job_started_at: datetime | None = None
    job_completed_at: datetime | None = None
    failure_class: str | None = None
    error: str | None = None
    ready: bool = True
    ready_at: datetime | None = None
    """When it became eligible: its job's completion or its last agent's readiness, whichever is later."""


@dataclass
class PresetRows:
    preset: PresetRow
    prebuilds: list[PrebuildRow] = field(default_factory=list)
    creations: list[PrebuildRow] | None = None
    """The preset's latest creations (first builds of its prebuilds, claimed or deleted ones included), for the
    failure maths. None: use ``prebuilds`` (the latest build of each prebuild still in the pool)."""
    counts: RunningCounts | None = None
    """The pool as counts, when its rows were not read (``prebuilds`` is then empty)."""


def group(presets: Iterable[PresetRow], prebuilds: Iterable[PrebuildRow]) -> dict[UUID, PresetRows]:
    grouped = {p.preset_id: PresetRows(p) for p in presets}
    for row in prebuilds:
        if row.preset_id is not None and row.preset_id in grouped:
            grouped[row.preset_id].prebuilds.append(row)
    return grouped


def inflight_jobs(prebuilds: Iterable[PrebuildRow]) -> int:
    return sum(1 for row in prebuilds if row.job_status in ACTIVE_STATUSES)


FailureInputs = Callable[[PresetRow, list[PrebuildRow]], Mapping[str, Any]]
"""Fills the failure fields of a PresetSnapshot (backoff_until, hard_limited, …) from a preset's rows."""


def preset_snapshot(
    rows: PresetRows, *, delete_retry: timedelta, failure_inputs: FailureInputs | None = None
) -> PresetSnapshot:
    p = rows.preset
    running: list[RunningPrebuild] = []
    leftovers: list[Leftover] = []
    pending: list[PendingCreate] = []
    counts: dict[str, int] = defaultdict(int)
    failed = 0
    for row in rows.prebuilds:
        status, transition = row.job_status, row.transition
        if status in ACTIVE_STATUSES:
            counts[transition] += 1
            if transition == "start" and status == "pending" and row.job_started_at is None:
                pending.append(PendingCreate(row.job_id, row.workspace_id))
        elif transition == "start":
            if status == "succeeded":
                running.append(RunningPrebuild(row.workspace_id, row.workspace_created_at, row.ready))
            elif status == "canceled":
                # Only a create that never started is an orphan (the builder checks the same thing).
                started = row.job_started_at is not None
                reason = CleanupReason.CANCELED_STARTED if started else CleanupReason.CANCELED
                leftovers.append(Leftover(row.workspace_id, reason))
            else:
                failed += 1
        elif transition == "stop":
            leftovers.append(Leftover(row.workspace_id, CleanupReason.STOPPED))
        elif transition == "delete":  # a delete that failed or was canceled: retried after a pause
            completed = row.job_completed_at or row.build_created_at
            leftovers.append(
                Leftover(row.workspace_id, CleanupReason.DELETE_FAILED, completed + delete_retry)
            )
    history = rows.prebuilds if rows.creations is None else rows.creations
    extra = dict(failure_inputs(p, history)) if failure_inputs else {}
    return PresetSnapshot(
        preset_id=p.preset_id,
        template_name=p.template_name,
        preset_name=p.preset_name,
        version_name=p.version_name,
        active=p.active,
        desired_instances=p.desired_instances or 0,
        ttl_seconds=p.ttl_seconds,
        timezone=p.timezone,
        schedules=p.schedules,
        last_invalidated_at=p.last_invalidated_at,
        running=tuple(sorted(running, key=lambda r: r.created_at)),
        starting=counts["start"],
        stopping=counts["stop"],
        deleting=counts["delete"],
        pending_creates=tuple(pending) if not p.active else (),
        leftovers=tuple(leftovers),
        failed=failed,
        running_counts=rows.counts if not rows.prebuilds else None,
        **extra,
    )
