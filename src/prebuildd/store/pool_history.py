"""The pool-size history repository: one batched insert of a cycle's samples, the samples of some presets since a
time, the pruning of old ones, and the times to ready of a pool (queries in ``queries/pool_history.sql``).

Samples are keyed by template and preset name (a new template version keeps its pool's history) and read under
the id of the preset asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from prebuildd.store.db import Conn
from prebuildd.store.rows import execute, fetch_all


@dataclass(frozen=True)
class PoolSample:
    at: datetime
    desired: int
    running: int
    eligible: int


@dataclass(frozen=True)
class NewPoolSample:
    """One pool's counts as a cycle saw them."""

    template_id: UUID
    preset_name: str
    desired: int
    running: int
    eligible: int


async def record(conn: Conn, at: datetime, samples: Sequence[NewPoolSample]) -> None:
    """One statement for every sample of a cycle (nothing at all when there are none)."""
    if not samples:
        return
    await execute(
        conn,
        "pool_history.record",
        {
            "at": at,
            "template_ids": [s.template_id for s in samples],
            "preset_names": [s.preset_name for s in samples],
            "desired": [s.desired for s in samples],
            "running": [s.running for s in samples],
            "eligible": [s.eligible for s in samples],
        },
    )


async def recent(
    conn: Conn,
    preset_ids: Sequence[UUID],
    since: datetime,
    *,
    organization_ids: Sequence[UUID] | None = None,
) -> dict[UUID, list[PoolSample]]:
    """Each preset's samples from ``since`` on, oldest first, led by the last sample before ``since`` dated
    ``since`` (the size in effect when the window opens). A preset with no sample (or unknown, or not of
    ``organization_ids`` when given) maps to an empty list."""
    found: dict[UUID, list[PoolSample]] = {p: [] for p in preset_ids}
    if not preset_ids:
        return found
    rows = await fetch_all(
        conn,
        "pool_history.recent",
        {
            "preset_ids": list(preset_ids),
            "since": since,
            "organization_ids": list(organization_ids) if organization_ids is not None else None,
        },
    )
    for row in rows:
        found[row["preset_id"]].append(
            PoolSample(max(row["at"], since), row["desired"], row["running"], row["eligible"])
        )
    return found


async def prune(conn: Conn, before: datetime) -> int:
    """Deletes the samples older than ``before``; how many."""
    return await execute(conn, "pool_history.prune", {"before": before})


async def ready_times(
    conn: Conn, preset_id: UUID, since: datetime, *, organization_ids: Sequence[UUID] | None = None
) -> list[float]:
    """The pool's times to ready (seconds) of prebuilds ready since ``since``, oldest first."""
    return await _values(conn, "pool_history.ready_times", "ready_s", preset_id, since, organization_ids)


async def claim_latencies(
    conn: Conn, preset_id: UUID, since: datetime, *, organization_ids: Sequence[UUID] | None = None
) -> list[float]:
    """The pool's claim latencies (milliseconds) of claims since ``since``, oldest first."""
    return await _values(
        conn, "pool_history.claim_latencies", "latency_ms", preset_id, since, organization_ids
    )


async def _values(
    conn: Conn,
    query: str,
    column: str,
    preset_id: UUID,
    since: datetime,
    organization_ids: Sequence[UUID] | None,
) -> list[float]:
    params = {
        "preset_id": preset_id,
        "since": since,
        "organization_ids": list(organization_ids) if organization_ids is not None else None,
    }
    return [float(row[column]) for row in await fetch_all(conn, query, params)]
