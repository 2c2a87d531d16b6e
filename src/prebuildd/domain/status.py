"""A pool's status as operators read it: from a preset's snapshot and its plan to a status word, the next action
and the error behind it (pure). ``prebuilds status`` and ``explain`` show it; the planner decides, this only names
the outcome, in words that agree with the status (never "creating 1" while creation waits on a backoff).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from prebuildd.domain.planner import Plan, PresetSnapshot, PresetState


class PoolStatus(StrEnum):
    HEALTHY = "healthy"
    HARD_LIMITED = "hard_limited"
    BACKING_OFF = "backing_off"
    PAUSED = "paused"
    INACTIVE = "inactive"


@dataclass(frozen=True)
class DerivedStatus:
    status: PoolStatus
    next_action: str
    """What the next cycle does, then why: 'create 2 at 12:03:00Z: desired 3, running 1'."""
    blocked: str | None
    backoff_until: datetime | None
    """Set only while the preset is backing off."""
    error: str | None = None
    """The failure behind a backoff or a hard limit (its text may span lines); None when the pool is not held."""


def pool_status(*, paused: bool, active: bool, hard_limited: bool, backing_off: bool) -> PoolStatus:
    """The first that applies: paused (everything is), inactive, hard-limited, backing off, healthy."""
    if paused:
        return PoolStatus.PAUSED
    if not active:
        return PoolStatus.INACTIVE
    if hard_limited:
        return PoolStatus.HARD_LIMITED
    if backing_off:
        return PoolStatus.BACKING_OFF
    return PoolStatus.HEALTHY


def derive_status(snapshot: PresetSnapshot, plan: Plan, now: datetime, *, paused: bool) -> DerivedStatus:
    backing_off = snapshot.backoff_until is not None and now < snapshot.backoff_until
    status = pool_status(
        paused=paused,
        active=snapshot.active,
        hard_limited=snapshot.hard_limited,
        backing_off=backing_off,
    )
    error = None
    if status is PoolStatus.HARD_LIMITED:
        error = snapshot.hard_limit_reason or None
    elif status is PoolStatus.BACKING_OFF:
        error = snapshot.backoff_reason or None
    return DerivedStatus(
        status=status,
        next_action=next_action(snapshot, plan, status, now),
        blocked=plan.blocked,
        backoff_until=snapshot.backoff_until if backing_off else None,
        error=error,
    )


def next_action(snapshot: PresetSnapshot, plan: Plan, status: PoolStatus, now: datetime) -> str:
    """The plan's next step as ``action: why``, saying "after" or "no creates" when creation is held back."""
    have = pool_counts(plan.state)
    wanted, create = plan.wanted_creates, plan.create
    if status is PoolStatus.PAUSED:
        return f"nothing while paused: {have}"
    if status is PoolStatus.INACTIVE or not wanted:
        return plan.reason
    if create == 0 and snapshot.hard_limited:
        return f"no creates: {have}; `prebuildd prebuilds retry` resumes them"
    if create == 0 and snapshot.backoff_until is not None and now < snapshot.backoff_until:
        return f"create {wanted} at {snapshot.backoff_until:%H:%M:%S}Z: {have}"
    if create < wanted:
        return f"creating {create} of {wanted} (slow start after failures): {have}"
    return plan.reason


def pool_counts(state: PresetState) -> str:
    """'desired 3, running 1, starting 1': the counts a next action is read against."""
    have = f"desired {state.desired}, running {state.running_valid}"
    if state.starting:
        have += f", starting {state.starting}"
    if state.expired:
        have += f", expired {state.expired}"
    return have
