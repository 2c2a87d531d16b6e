"""A pool's status as operators read it: from a preset's snapshot and its plan to a status word and the next
action (pure). ``prebuilds status`` and ``explain`` show it; the planner decides, this only names the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from prebuildd.domain.planner import Plan, PresetSnapshot


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
    blocked: str | None
    backoff_until: datetime | None
    """Set only while the preset is backing off."""


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
    return DerivedStatus(
        status=pool_status(
            paused=paused,
            active=snapshot.active,
            hard_limited=snapshot.hard_limited,
            backing_off=backing_off,
        ),
        next_action=plan.reason,
        blocked=plan.blocked,
        backoff_until=snapshot.backoff_until if backing_off else None,
    )
