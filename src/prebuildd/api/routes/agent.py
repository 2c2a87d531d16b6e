"""Routes for workspace agents: report the lifecycle, learn of a claim (long poll), with an agent token."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel

from prebuildd.api.deps import AgentDep, ServicesDep
from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.store import channels
from prebuildd.store.claims import workspace_claim
from prebuildd.store.db import fetch_one

router = APIRouter(tags=["agent"])


class AgentInfo(BaseModel):
    agent: str
    lifecycle: str
    workspace_id: UUID
    workspace_name: str
    owner: str
    is_prebuild: bool
    claimed_at: datetime | None


class LifecycleIn(BaseModel):
    state: Literal["starting", "ready", "start_error", "off"]


class ClaimOut(BaseModel):
    claimed: bool
    claimed_at: datetime | None = None
    owner: str | None = None
    workspace_name: str | None = None


@router.get("/agent/me", response_model=AgentInfo, summary="The agent's workspace")
async def me(agent: AgentDep) -> AgentInfo:
    return AgentInfo(
        agent=agent["name"],
        lifecycle=agent["lifecycle"],
        workspace_id=agent["workspace_id"],
        workspace_name=agent["workspace_name"],
        owner=agent["owner_name"],
        is_prebuild=agent["owner_id"] == PREBUILDS_USER_ID,
        claimed_at=agent["claimed_at"],
    )


@router.post("/agent/lifecycle", response_model=AgentInfo, summary="Report starting, ready or start_error")
async def lifecycle(body: LifecycleIn, agent: AgentDep, services: ServicesDep) -> AgentInfo:
    now = services.clock.now()
    async with services.db.transaction() as conn:
        row = await fetch_one(
            conn, "agents.set_lifecycle", {"id": agent["id"], "lifecycle": body.state, "now": now}
        )
    assert row is not None
    if body.state == "ready" and agent["owner_id"] == PREBUILDS_USER_ID:
        services.metrics.time_to_ready.observe(max((now - agent["workspace_created_at"]).total_seconds(), 0))
    if body.state != agent["lifecycle"]:
        services.kick("agent lifecycle")  # readiness makes a prebuild eligible
    return AgentInfo(
        agent=agent["name"],
        lifecycle=row["lifecycle"],
        workspace_id=agent["workspace_id"],
        workspace_name=agent["workspace_name"],
        owner=agent["owner_name"],
        is_prebuild=agent["owner_id"] == PREBUILDS_USER_ID,
        claimed_at=agent["claimed_at"],
    )


@router.get(
    "/agent/claim",
    response_model=ClaimOut,
    summary="Wait until the workspace is claimed after `after` (long poll)",
)
async def claim(
    agent: AgentDep,
    services: ServicesDep,
    after: Annotated[datetime | None, Query(description="The last claim this agent has handled")] = None,
    wait: Annotated[float, Query(ge=0, le=60, description="Seconds to wait for a claim")] = 30.0,
) -> ClaimOut:
    deadline = time.monotonic() + wait
    while True:
        async with services.db.transaction() as conn:
            found = await workspace_claim(conn, agent["workspace_id"])
        if found is None or found.deleted:
            return ClaimOut(claimed=False)
        claimed_at = found.claimed_at
        if claimed_at is not None and (after is None or claimed_at > after):
            return ClaimOut(
                claimed=True,
                claimed_at=claimed_at,
                owner=found.owner_name,
                workspace_name=found.workspace_name,
            )
        left = deadline - time.monotonic()
        if left <= 0:
            return ClaimOut(claimed=False)
        await services.listener.wait(channels.WORKSPACE_CLAIMED, min(left, 5.0))
