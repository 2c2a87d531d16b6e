"""The reconcile planner: a preset's snapshot becomes its state and an ordered list of actions (SPEC §5).

Pure and synchronous: the reconciler reads one global snapshot, calls ``plan_preset`` for each preset and
``pace`` over all of them, then executes. Everything that decides what happens is here, so it can be tested by
tables and by property tests without a database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

from prebuildd.domain.schedules import Schedule, desired_at
from prebuildd.domain.words import plural


@dataclass(frozen=True, slots=True)
class RunningPrebuild:
    """A prebuild whose latest build is a successful start."""

    workspace_id: UUID
    created_at: datetime
    ready: bool = True


class CleanupReason(StrEnum):
    STOPPED = "stopped"
    CANCELED = "canceled create"
    """Canceled before a daemon started it: nothing was provisioned, so the delete is an orphan delete."""
    CANCELED_STARTED = "canceled running create"
    """Canceled after it started: infrastructure may exist, so the delete runs a job (SPEC §3)."""
    DELETE_FAILED = "delete failed"


@dataclass(frozen=True, slots=True)
class Leftover:
    """A prebuild that is neither running nor evidence: it is deleted (a failed delete after ``retry_at``)."""

    workspace_id: UUID
    reason: CleanupReason
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PendingCreate:
    """A create job of this preset that no daemon has started yet."""

    job_id: UUID
    workspace_id: UUID


@dataclass(frozen=True, slots=True)
class RunningCounts:
    """A pool's running prebuilds as counts, for a pool none of whose prebuilds can be acted on one by one (none
    expired, no leftovers, no jobs in flight, no failures): the snapshot reader aggregates such pools in SQL instead
    of loading a row per prebuild. ``needs_rows`` says when the counts are not enough to plan."""

    total: int
    ready: int


@dataclass(frozen=True, slots=True)
class PresetSnapshot:
    preset_id: UUID
    template_name: str
    preset_name: str
    version_name: str
    active: bool
    """The preset's version is the template's active one, and the template is neither deleted nor deprecated."""
    desired_instances: int
    ttl_seconds: int = 0
    timezone: str = "UTC"
    schedules: tuple[Schedule, ...] = ()
    last_invalidated_at: datetime | None = None
    running: tuple[RunningPrebuild, ...] = ()
    starting: int = 0
    stopping: int = 0
    deleting: int = 0
    pending_creates: tuple[PendingCreate, ...] = ()
    leftovers: tuple[Leftover, ...] = ()
    failed: int = 0
    """Failed prebuilds kept as evidence (no pool slot); shown in status only."""
    # Inputs from failure handling (SPEC §6): when set, creation waits or stops.
    backoff_until: datetime | None = None
    backoff_reason: str = ""
    hard_limited: bool = False
    hard_limit_reason: str = ""
    create_cap: int | None = None
    """Slow start after failures: at most this many creates in one cycle."""
    # Where the target comes from (SPEC §5.2, ``domain.targets``): None keeps the scheduled target.
    target_override: int | None = None
    target_source: str = "scheduled"
    target_reason: str = ""
    """Why the target is what it is, for explain: 'autoscale: 0.8 claims/min, ready mean 3m20s, p90 4m10s, target 95%'."""
    running_counts: RunningCounts | None = None
    """Set instead of ``running`` when the pool was read as counts (see ``RunningCounts``)."""


@dataclass(frozen=True, slots=True)
class PresetState:
    desired: int
    running: int
    running_valid: int
    eligible: int
    expired: int
    extraneous: int
    starting: int
    stopping: int
    deleting: int
    failed: int = 0
    schedule_problem: str | None = None
    target_source: str = "scheduled"
    target_reason: str = ""


class DeleteReason(StrEnum):
    EXPIRED = "expired"
    EXTRANEOUS = "extraneous"
    INACTIVE = "inactive version"
    STOPPED = "stopped"
    CANCELED = "canceled create"
    DELETE_FAILED = "retrying failed delete"


@dataclass(frozen=True, slots=True)
class Delete:
    workspace_id: UUID
    reason: DeleteReason
    orphan: bool = False
    """Nothing was ever provisioned: the builder completes the delete without a job."""


@dataclass(frozen=True, slots=True)
class Plan:
    preset_id: UUID
    state: PresetState
    cancels: tuple[PendingCreate, ...] = ()
    deletes: tuple[Delete, ...] = ()
    create: int = 0
    reason: str = ""
    """Why, in words an operator reads: 'creating 2: desired 3, running 1'."""
    blocked: str | None = None
    """Why creation is held back (backoff, hard limit, pacing, pause), when it is."""
    wanted_creates: int = 0
    """Creates before pacing and gates: what the pool lacks."""

    @property
    def actions(self) -> int:
        return len(self.cancels) + len(self.deletes) + self.create


def preset_state(snap: PresetSnapshot, now: datetime) -> tuple[PresetState, list[RunningPrebuild]]:
    """The state of the pool, and which running prebuilds are expired."""
    desired = desired_at(now, snap.timezone, snap.schedules, snap.desired_instances)
    scheduled = desired.instances if snap.target_override is None else snap.target_override
    target = scheduled if snap.active else 0
    counts = snap.running_counts
    if counts is not None:  # read as counts: none of them is expired (the reader loads rows otherwise)
        expired: list[RunningPrebuild] = []
        total, valid_n, ready_n = counts.total, counts.total, counts.ready
    else:
        expired = [p for p in snap.running if _is_expired(p, snap, now)]
        valid = [p for p in snap.running if p not in expired]
        total, valid_n, ready_n = len(snap.running), len(valid), sum(1 for p in valid if p.ready)
    state = PresetState(
        desired=target,
        running=total,
        running_valid=valid_n,
        # What a claim can take: none of an inactive version's (or a deleted or deprecated template's) prebuilds.
        eligible=ready_n if snap.active else 0,
        expired=len(expired),
        extraneous=max(valid_n - target, 0),
        starting=snap.starting,
        stopping=snap.stopping,
        deleting=snap.deleting,
        failed=snap.failed,
        schedule_problem=desired.problem,
        target_source=snap.target_source,
        target_reason=snap.target_reason,
    )
    return state, expired


def needs_rows(snap: PresetSnapshot, now: datetime, state: PresetState | None = None) -> bool:
    """Whether a pool read as counts must be read again row by row before it can be planned: some of its running
    prebuilds are to be deleted (an inactive version's, or more than the target), and a delete names one."""
    counts = snap.running_counts
    if counts is None or counts.total == 0:
        return False
    if not snap.active:
        return True
    return (state or preset_state(snap, now)[0]).extraneous > 0


def _is_expired(p: RunningPrebuild, snap: PresetSnapshot, now: datetime) -> bool:
    if snap.last_invalidated_at is not None and p.created_at < snap.last_invalidated_at:
        return True
    # Strictly older than its ttl, as the claim statement reads it: a prebuild exactly ttl old is still claimable.
    return snap.ttl_seconds > 0 and now - p.created_at > timedelta(seconds=snap.ttl_seconds)


_LEFTOVER_REASON = {
    CleanupReason.STOPPED: DeleteReason.STOPPED,
    CleanupReason.CANCELED: DeleteReason.CANCELED,
    CleanupReason.CANCELED_STARTED: DeleteReason.CANCELED,
    CleanupReason.DELETE_FAILED: DeleteReason.DELETE_FAILED,
}


def plan_preset(snap: PresetSnapshot, now: datetime, *, paused: bool = False) -> Plan:
    """State and actions for one preset, in order: cancels, deletes, then creates (SPEC §5)."""
    state, expired = preset_state(snap, now)
    if needs_rows(snap, now, state):
        raise ValueError(f"preset {snap.preset_id}: its deletes need its prebuilds' rows, not their counts")
    if paused:
        return Plan(snap.preset_id, state, reason="reconciliation is paused", blocked="paused")

    deletes: list[Delete] = [
        Delete(item.workspace_id, _LEFTOVER_REASON[item.reason], orphan=item.reason is CleanupReason.CANCELED)
        for item in snap.leftovers
        if item.retry_at is None or item.retry_at <= now
    ]
    if not snap.active:
        cancels = snap.pending_creates
        deletes += [Delete(p.workspace_id, DeleteReason.INACTIVE) for p in snap.running]
        reason = f"inactive: removing {plural(len(snap.running), 'prebuild')}" if snap.running else "inactive"
        if cancels:
            reason += f", canceling {plural(len(cancels), 'pending create')}"
        return Plan(snap.preset_id, state, cancels=cancels, deletes=tuple(deletes), reason=reason)

    deletes += [Delete(p.workspace_id, DeleteReason.EXPIRED) for p in expired]
    valid = [p for p in snap.running if p not in expired]
    # Not-ready first (they are furthest from serving a claim), then oldest.
    surplus = sorted(valid, key=lambda p: (p.ready, p.created_at))[: state.extraneous]
    deletes += [Delete(p.workspace_id, DeleteReason.EXTRANEOUS) for p in surplus]

    wanted = min(max(state.desired - state.running_valid - state.starting, 0), state.desired)
    reason = _describe(state, wanted)
    blocked = None
    create = wanted
    if wanted and snap.hard_limited:
        create, blocked = 0, f"hard-limited: {snap.hard_limit_reason}".rstrip(": ")
    elif wanted and snap.backoff_until is not None and now < snap.backoff_until:
        create = 0
        blocked = f"backing off until {snap.backoff_until:%Y-%m-%d %H:%M:%S}Z"
        if snap.backoff_reason:
            blocked += f" ({snap.backoff_reason})"
    elif wanted and snap.create_cap is not None and wanted > snap.create_cap:
        create = snap.create_cap
        blocked = f"slow start after failures: {create} of {wanted} this cycle"
    return Plan(
        snap.preset_id,
        state,
        deletes=tuple(deletes),
        create=create,
        reason=reason,
        blocked=blocked,
        wanted_creates=wanted,
    )


def _describe(state: PresetState, wanted: int) -> str:
    have = f"desired {state.desired}, running {state.running_valid}"
    if state.starting:
        have += f", starting {state.starting}"
    if state.expired:
        have += f", expired {state.expired}"
    if wanted:
        return f"creating {wanted}: {have}"
    if state.extraneous:
        return f"deleting {state.extraneous} extraneous: {have}"
    return f"at target: {have}"


@dataclass
class _Budget:
    left: int
    used: dict[UUID, int] = field(default_factory=dict)


def pace(plans: Sequence[Plan], inflight: int, cap: int) -> list[Plan]:
    """Apply the global cap on in-flight prebuild jobs: deletes before creates, plan order otherwise.

    Cancels and orphan deletes start no job and are never held back.
    """
    budget = max(cap - inflight, 0)
    paced: list[Plan] = []
    trimmed: list[Plan] = []
    for plan in plans:
        keep: list[Delete] = []
        for delete in plan.deletes:
            if delete.orphan:
                keep.append(delete)
            elif budget > 0:
                keep.append(delete)
                budget -= 1
        trimmed.append(replace(plan, deletes=tuple(keep)) if len(keep) != len(plan.deletes) else plan)
    for plan in trimmed:
        if plan.create == 0:
            paced.append(plan)
            continue
        allowed = min(plan.create, budget)
        budget -= allowed
        if allowed < plan.create:
            note = f"paced: {allowed} of {plan.create} creates (max {cap} prebuild jobs in flight)"
            plan = replace(plan, create=allowed, blocked=plan.blocked or note)
        paced.append(plan)
    return paced
