"""Claims on a real PostgreSQL: atomic hand-over under concurrency, races with deletes, eligibility, selection."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest
import structlog.testing

from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.prebuilds.claim import CreateRequest, CreateResult
from prebuildd.store.db import Database
from tests.support.env import Env
from tests.support.pools import creator, prebuild_ids, reconciler

T = TypeVar("T")

POOL = """
provisioner = "echo"
[[parameters]]
name = "repo"
default = "app"
mutable = false
[[parameters]]
name = "editor"
default = "vim"
[[presets]]
name = "app"
parameters = { repo = "app" }
[presets.prebuilds]
instances = {n}
[[presets]]
name = "docs"
parameters = { repo = "docs", editor = "emacs" }
[presets.prebuilds]
instances = 1
"""


async def ready_pool(env: Env, n: int, **config: Any) -> Any:
    pushed = await env.push("t", POOL.replace("{n}", str(n)))
    rec = reconciler(env, **config)
    for _ in range(3):
        await rec.run_cycle()
        await env.run_jobs(limit=1000)
    return pushed, rec


def request(env: Env, template_id: UUID, name: str, **kw: Any) -> CreateRequest:
    return CreateRequest(
        organization_id=env.org_id,
        owner_id=env.member_id,
        initiator_id=env.member_id,
        template_id=template_id,
        name=name,
        **kw,
    )


async def preset_id(env: Env, name: str) -> UUID:
    row = await env.one("SELECT id FROM template_version_presets WHERE name = %s", name)
    return UUID(str(row["id"]))


async def test_concurrent_claimers_never_share_a_prebuild(env: Env, database_url: str) -> None:
    pushed, rec = await ready_pool(env, 40)
    assert len(await prebuild_ids(env)) == 41  # 40 app + 1 docs
    big = await Database(database_url, min_size=10, max_size=120).open()
    try:
        rec.services.db = big
        app = await preset_id(env, "app")
        results = await asyncio.gather(
            *(
                creator(rec.services).create_workspace(
                    request(env, pushed.template_id, f"dev{i}", preset_id=app)
                )
                for i in range(100)
            )
        )
    finally:
        await big.close()
    claimed = [r for r in results if r.claimed]
    cold = [r for r in results if not r.claimed]
    assert len(claimed) == 40 and len(cold) == 60
    assert len({r.workspace_id for r in results}) == 100
    assert all(r.build is None for r in claimed)  # no claim step: a claim starts no job
    owners = await env.one(
        "SELECT count(*) AS n FROM workspaces WHERE owner_id = %s AND NOT deleted", env.member_id
    )
    assert owners["n"] == 100
    events = await env.one(
        "SELECT count(*) FILTER (WHERE kind = 'claim.succeeded') AS claims, "
        "count(*) FILTER (WHERE kind = 'claim.missed') AS misses FROM events"
    )
    assert (events["claims"], events["misses"]) == (40, 60)
    assert await prebuild_ids(env) == [await _docs_prebuild(env)]


async def _docs_prebuild(env: Env) -> UUID:
    row = await env.one(
        "SELECT workspace_id FROM workspace_latest_builds lb JOIN template_version_presets p "
        "ON p.id = lb.preset_id WHERE p.name = 'docs' AND lb.owner_id = %s",
        PREBUILDS_USER_ID,
    )
    return UUID(str(row["workspace_id"]))


async def test_a_claim_racing_a_reconciler_delete_never_both_win(env: Env) -> None:
    pushed, rec = await ready_pool(env, 1)
    app = await preset_id(env, "app")
    outcomes = {"claim": 0, "delete": 0}
    rng = random.Random(3)
    for round_number in range(40):
        [victim] = [w for w in await prebuild_ids(env) if w != await _docs_prebuild(env)]
        # Vary which side gets to the database first, and by how much.
        claim, deleted = await asyncio.gather(
            _after(
                rng.random() * 0.004,
                creator(rec.services).create_workspace(
                    request(env, pushed.template_id, f"race{round_number}", preset_id=app)
                ),
            ),
            _after(rng.random() * 0.004, rec._delete(victim, "extraneous")),
        )
        owner = await env.one("SELECT owner_id FROM workspaces WHERE id = %s", victim)
        latest = await env.one(
            "SELECT transition FROM workspace_latest_builds WHERE workspace_id = %s", victim
        )
        if claim.claimed and claim.workspace_id == victim:
            assert not deleted, "a claimed prebuild was also deleted"
            assert owner["owner_id"] == env.member_id and latest["transition"] == "start"
            outcomes["claim"] += 1
        else:
            assert deleted and owner["owner_id"] == PREBUILDS_USER_ID and latest["transition"] == "delete"
            outcomes["delete"] += 1
        await env.run_jobs(limit=100)
        for _ in range(2):
            await rec.run_cycle()
            await env.run_jobs(limit=100)
    assert outcomes["claim"] + outcomes["delete"] == 40
    assert outcomes["claim"] and outcomes["delete"], outcomes  # both orders really happened


async def _after(jitter: float, work: Awaitable[T]) -> T:
    """Start ``work`` after a random head start of the other side (interleaving, not waiting for work)."""
    await asyncio.sleep(jitter)
    return await work


async def test_ineligible_prebuilds_are_never_claimed(env: Env) -> None:
    pushed, rec = await ready_pool(env, 1)
    app = await preset_id(env, "app")
    [victim] = [w for w in await prebuild_ids(env) if w != await _docs_prebuild(env)]

    async def claimable(name: str) -> bool:
        result: CreateResult = await creator(rec.services).create_workspace(
            request(env, pushed.template_id, name, preset_id=app)
        )
        if result.claimed:
            assert result.workspace_id == victim
            async with env.db.transaction() as conn:  # hand it back for the next check
                await conn.execute(
                    "UPDATE workspaces SET owner_id = %s, name = 'prebuild-back', claimed_at = NULL, "
                    "pool_preset_id = (SELECT preset_id FROM workspace_builds b WHERE b.workspace_id = workspaces.id AND b.build_number = 1) "
                    "WHERE id = %s",
                    (PREBUILDS_USER_ID, victim),
                )
        async with env.db.transaction() as conn:  # drop the cold build so names stay free
            await conn.execute(
                "UPDATE workspaces SET deleted = true WHERE owner_id = %s AND NOT deleted", (env.member_id,)
            )
        return result.claimed

    assert await claimable("w0")
    # Not ready: an agent that has not reported ready.
    async with env.db.transaction() as conn:
        await conn.execute(
            "INSERT INTO workspace_agents (id, workspace_id, name, token_hash, lifecycle, "
            "lifecycle_changed_at, created_at) VALUES (%s, %s, 'main', %s, 'starting', %s, %s)",
            (uuid4(), victim, b"h", env.clock.now(), env.clock.now()),
        )
    assert not await claimable("w1")
    async with env.db.transaction() as conn:
        await conn.execute("UPDATE workspace_agents SET lifecycle = 'ready'")
    assert await claimable("w2")
    # Expired by invalidation, then by TTL.
    env.clock.advance(1)
    async with env.db.transaction() as conn:
        await conn.execute("UPDATE template_version_presets SET last_invalidated_at = %s", (env.clock.now(),))
    assert not await claimable("w3")
    async with env.db.transaction() as conn:
        await conn.execute(
            "UPDATE template_version_presets SET last_invalidated_at = NULL, ttl_seconds = 120"
        )
    assert await claimable("w4")
    async with env.db.transaction() as conn:
        cursor = await conn.execute("SELECT created_at FROM workspaces WHERE id = %s", (victim,))
        created = (await cursor.fetchone())["created_at"]
    env.clock.advance(120 - (env.clock.now() - created).total_seconds())
    assert await claimable("w4b")  # exactly its ttl old: expiry is strictly older, as the planner reads it
    env.clock.advance(1)
    assert not await claimable("w5")
    async with env.db.transaction() as conn:
        await conn.execute("UPDATE template_version_presets SET ttl_seconds = 0")
    assert await claimable("w6")
    # Deprecated, then deleted template.
    async with env.db.transaction() as conn:
        await conn.execute("UPDATE templates SET deprecated_at = %s", (env.clock.now(),))
    with pytest.raises(Exception):  # noqa: B017 - the cold build is refused too (deprecated)
        await claimable("w7")
    async with env.db.transaction() as conn:
        await conn.execute("UPDATE templates SET deprecated_at = NULL")
    assert await claimable("w8")
    # Outdated version: a new active version makes the old prebuild ineligible.
    await env.push("t", POOL.replace("{n}", "1"))
    async with env.db.transaction() as conn:
        await conn.execute(
            "UPDATE workspaces SET deleted = true WHERE owner_id = %s AND id <> %s",
            (PREBUILDS_USER_ID, victim),
        )
    new_app = await env.one(
        "SELECT p.id FROM template_version_presets p JOIN templates t "
        "ON t.active_version_id = p.template_version_id WHERE p.name = 'app'"
    )
    result = await creator(rec.services).create_workspace(
        request(env, pushed.template_id, "w9", preset_id=new_app["id"])
    )
    assert not result.claimed
    owner = await env.one("SELECT owner_id FROM workspaces WHERE id = %s", victim)
    assert owner["owner_id"] == PREBUILDS_USER_ID


async def test_preset_selection_by_parameters(env: Env) -> None:
    pushed, rec = await ready_pool(env, 1)
    docs = await _docs_prebuild(env)
    by_values = await creator(rec.services).create_workspace(
        request(env, pushed.template_id, "d1", parameters={"repo": "docs", "editor": "emacs"})
    )
    assert by_values.claimed and by_values.workspace_id == docs
    assert by_values.build is None
    # Only `repo` given: `app` (repo = app) matches; a mutable difference still claims, with a claim build.
    [app_prebuild] = [w for w in await prebuild_ids(env) if w != docs]
    mutable = await creator(rec.services).create_workspace(
        request(env, pushed.template_id, "a1", parameters={"repo": "app", "editor": "nano"})
    )
    assert mutable.claimed and mutable.workspace_id == app_prebuild
    assert mutable.build is not None  # the claim build carries the user's editor
    build = await env.one("SELECT * FROM workspace_builds WHERE id = %s", mutable.build.build_id)
    assert build["reason"] == "claim" and build["parameters"]["editor"] == "nano"


async def test_an_immutable_value_that_differs_means_no_claim(env: Env) -> None:
    pushed, rec = await ready_pool(env, 1)
    app = await preset_id(env, "app")
    result = await creator(rec.services).create_workspace(
        request(env, pushed.template_id, "x1", preset_id=app, parameters={"repo": "other"})
    )
    assert not result.claimed
    assert len(await prebuild_ids(env)) == 2  # both prebuilds still in their pools


async def test_a_claim_logs_its_stable_event(env: Env) -> None:
    pushed, rec = await ready_pool(env, 1)
    app = await preset_id(env, "app")
    with structlog.testing.capture_logs() as logs:
        result = await creator(rec.services).create_workspace(
            request(env, pushed.template_id, "logged", preset_id=app)
        )
    assert result.claimed
    [event] = [e for e in logs if e["event"] == "claim.succeeded"]
    assert event["workspace_id"] == str(result.workspace_id) and event["preset"] == "app"
    assert event["log_level"] == "info" and event["ms"] >= 0
