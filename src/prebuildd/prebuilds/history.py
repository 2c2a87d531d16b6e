"""What the dashboard charts of a pool read: its size over the last hours (sampled by the reconciler) and its
claim latencies and times to ready (recorded with the demand data). Reads only; an organization scope, when
given, leaves out presets of other organizations as if they did not exist."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from prebuildd.runtime.clock import Clock, SystemClock
from prebuildd.store import pool_history as store
from prebuildd.store.db import Database
from prebuildd.store.pool_history import PoolSample

__all__ = ["PoolSample", "PresetLatencies", "pool_history", "preset_latencies"]


@dataclass(frozen=True)
class PresetLatencies:
    claim_ms: list[float]
    """Claims of prebuilds: request to claimed, in milliseconds, oldest first."""
    ready_s: list[float]
    """Prebuilds: create to eligible, in seconds, oldest first."""


async def pool_history(
    db: Database,
    preset_ids: Sequence[UUID],
    *,
    hours: int = 24,
    clock: Clock,
    organization_ids: Sequence[UUID] | None = None,
) -> dict[UUID, list[PoolSample]]:
    """Each preset's pool-size samples of the last ``hours``, oldest first, the first one dated at the start of
    the window when the pool was already sampled before it (its size then); every preset asked for has a key."""
    since = clock.now() - timedelta(hours=hours)
    async with db.transaction(readonly=True) as conn:
        return await store.recent(conn, preset_ids, since, organization_ids=organization_ids)


async def preset_latencies(
    db: Database,
    preset_id: UUID,
    *,
    hours: int = 24,
    clock: Clock | None = None,
    organization_ids: Sequence[UUID] | None = None,
) -> PresetLatencies:
    """The pool's claim latencies and times to ready of the last ``hours`` (both empty for a preset unknown or
    of another organization)."""
    since = (clock or SystemClock()).now() - timedelta(hours=hours)
    async with db.transaction(readonly=True) as conn:
        claims = await store.claim_latencies(conn, preset_id, since, organization_ids=organization_ids)
        ready = await store.ready_times(conn, preset_id, since, organization_ids=organization_ids)
    return PresetLatencies(claim_ms=claims, ready_s=ready)
