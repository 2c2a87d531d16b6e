"""The claim repository: the context a creation reads to decide whether it can claim, the one claim statement,
and claim events. Claims are a hot path: each function is one statement, one round trip."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from prebuildd.domain.claims import PoolPreset
from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.store.db import Conn
from prebuildd.store.rows import execute, fetch_all, fetch_one, jsonb
from prebuildd.store.templates import Template


@dataclass(frozen=True)
class ClaimContext:
    """A template as a creation sees it: its active version's manifest and pool presets, and whether the owner
    already has a workspace of the requested name."""

    template_id: UUID
    template_name: str
    organization_id: UUID
    deleted: bool
    active_version_id: UUID | None
    manifest: str | None
    presets: list[PoolPreset]
    name_taken: bool
    organization_name: str = ""
    """The organization's name: what the per-preset metrics are labelled with."""


@dataclass(frozen=True)
class ClaimEvent:
    """A row of the events table about a claim (``claim.missed``, ``claim.build``; the claim statement writes
    ``claim.succeeded`` itself)."""

    kind: str
    organization_id: UUID
    template_id: UUID
    preset_id: UUID
    workspace_id: UUID | None
    user_id: UUID
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)


async def claim_context(conn: Conn, *, template_id: UUID, owner_id: UUID, name: str) -> ClaimContext | None:
    row = await fetch_one(
        conn, "claims.context", {"template_id": template_id, "owner_id": owner_id, "name": name}
    )
    if row is None:
        return None
    return ClaimContext(
        template_id=row["id"],
        template_name=row["name"],
        organization_id=row["organization_id"],
        deleted=row["deleted"],
        active_version_id=row["active_version_id"],
        manifest=row["manifest"],
        presets=[PoolPreset(UUID(p["id"]), p["name"], dict(p["parameters"])) for p in row["presets"]],
        name_taken=row["name_taken"],
        organization_name=row["organization_name"],
    )


async def creation_target(
    conn: Conn, organization_id: UUID, name: str, preset: str | None
) -> tuple[Template, UUID | None] | None:
    """The live template ``name`` (case-insensitively) and the id of ``preset`` in its active version (None when
    not asked for or not there), in one statement; None when there is no such template."""
    row = await fetch_one(
        conn, "claims.creation_target", {"organization_id": organization_id, "name": name, "preset": preset}
    )
    if row is None:
        return None
    preset_id: UUID | None = row.pop("preset_id")
    return Template(**row), preset_id


async def claim_prebuild(
    conn: Conn, *, preset_id: UUID, owner_id: UUID, name: str, now: datetime, waited_ms: float = 0.0
) -> UUID | None:
    """Hand the oldest eligible prebuild of ``preset_id`` to ``owner_id`` as ``name``; its id, or None when no
    prebuild was eligible. The claim event and the agent's notification are part of the same statement (the
    claim statement of a batch of one, so that one statement says what is eligible)."""
    [got] = await claim_prebuilds(
        conn, preset_id=preset_id, requests=[(owner_id, name)], now=now, waited_ms=[waited_ms]
    )
    return got


async def claim_prebuilds(
    conn: Conn,
    *,
    preset_id: UUID,
    requests: Sequence[tuple[UUID, str]],
    now: datetime,
    waited_ms: Sequence[float] | None = None,
) -> list[UUID | None]:
    """One statement for several claims of ``preset_id``: ``requests`` are (owner id, workspace name) pairs, and
    the answer has, at each request's index, the prebuild it got or None (fewer eligible than requests). Any
    error (one request's name already taken, say) fails every claim of the statement. ``waited_ms``: each
    request's time from its arrival to this statement, recorded with the statement's own time as its latency."""
    rows = await fetch_all(
        conn,
        "claims.claim_batch",
        {
            "preset_id": preset_id,
            "prebuilds_user_id": PREBUILDS_USER_ID,
            "owner_ids": [owner for owner, _ in requests],
            "names": [name for _, name in requests],
            "waited_ms": list(waited_ms) if waited_ms is not None else [0.0] * len(requests),
            "now": now,
        },
    )
    got: list[UUID | None] = [None] * len(requests)
    for row in rows:
        got[row["ord"] - 1] = row["id"]
    return got


async def insert_claim_event(conn: Conn, event: ClaimEvent, now: datetime) -> None:
    await execute(
        conn,
        "claims.insert_event",
        {
            "now": now,
            "kind": event.kind,
            "organization_id": event.organization_id,
            "template_id": event.template_id,
            "preset_id": event.preset_id,
            "workspace_id": event.workspace_id,
            "user_id": event.user_id,
            "message": event.message,
            "data": jsonb(dict(event.data)),
        },
    )


async def claim_build_labels(conn: Conn, job_id: UUID) -> tuple[str, str, str] | None:
    """(organization name, template, preset) of the claim build whose job is ``job_id``: the per-preset labels."""
    row = await fetch_one(conn, "claims.claim_build_labels", {"job_id": job_id})
    if row is None:
        return None
    return (row["organization_name"], row["template_name"], row["preset_name"])
