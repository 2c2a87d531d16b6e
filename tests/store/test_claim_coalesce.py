"""Coalesced claims on a real PostgreSQL: concurrent claims of a preset share one statement, each request keeps
its own outcome, and a request that fails the shared statement fails alone."""

from __future__ import annotations

import asyncio
from uuid import UUID

import structlog.testing

from prebuildd.prebuilds.coalesce import ClaimCoalescer
from prebuildd.store.db import Database
from prebuildd.store.errors import StoreConflict
from tests.support.env import Env
from tests.support.pools import prebuild_ids, reconciler

POOL = """
provisioner = "echo"
[[parameters]]
name = "repo"
default = "app"
[[presets]]
name = "app"
parameters = { repo = "app" }
[presets.prebuilds]
instances = {n}
"""


async def ready_pool(env: Env, n: int) -> UUID:
    await env.push("t", POOL.replace("{n}", str(n)))
    rec = reconciler(env)
    for _ in range(3):
        await rec.run_cycle()
        await env.run_jobs(limit=1000)
    row = await env.one("SELECT id FROM template_version_presets WHERE name = 'app'")
    return UUID(str(row["id"]))


async def test_concurrent_claims_share_one_statement_and_each_gets_its_own(
    env: Env, database_url: str
) -> None:
    preset = await ready_pool(env, 15)
    pool = set(await prebuild_ids(env))
    assert len(pool) == 15
    sizes: list[int] = []
    db = await Database(database_url, min_size=2, max_size=30).open()
    try:
        line = ClaimCoalescer(db, env.clock, on_statement=sizes.append)
        got = await asyncio.gather(
            *(
                line.claim(preset_id=preset, owner_id=env.member_id, name=f"dev{i}", timeout=30)
                for i in range(20)
            )
        )
    finally:
        await db.close()
    assert sizes == [20]  # one statement for the twenty requests
    claimed = [w for w in got if w is not None]
    assert (
        len(claimed) == 15 and set(claimed) == pool
    )  # each prebuild to one request, five left to build cold
    assert got[:15] == claimed  # the first in line get the prebuilds
    async with env.db.transaction() as conn:
        cur = await conn.execute("SELECT id, name, owner_id FROM workspaces WHERE id = ANY(%s)", (claimed,))
        rows = await cur.fetchall()
    assert {r["owner_id"] for r in rows} == {env.member_id}
    by_id = {r["id"]: r["name"] for r in rows}
    assert [by_id[w] for w in claimed] == [f"dev{i}" for i in range(15)]
    events = await env.one("SELECT count(*) AS n FROM events WHERE kind = 'claim.succeeded'")
    assert events["n"] == 15
    assert await prebuild_ids(env) == []


async def test_a_request_that_fails_the_shared_statement_fails_alone(env: Env, database_url: str) -> None:
    preset = await ready_pool(env, 12)
    sizes: list[int] = []
    db = await Database(database_url, min_size=2, max_size=30).open()
    try:
        line = ClaimCoalescer(db, env.clock, on_statement=sizes.append)
        taken = await line.claim(preset_id=preset, owner_id=env.member_id, name="dev3", timeout=30)
        assert taken is not None
        sizes.clear()
        with structlog.testing.capture_logs() as logs:
            got = await asyncio.gather(
                *(
                    line.claim(preset_id=preset, owner_id=env.member_id, name=f"dev{i}", timeout=30)
                    for i in range(10)
                ),
                return_exceptions=True,
            )
    finally:
        await db.close()
    # dev3 is already the member's: the shared statement fails, every request claims again alone
    failed = [e for e in logs if e["event"] == "claim.batch_failed"]
    assert len(failed) == 1 and failed[0]["requests"] == 10
    assert isinstance(got[3], StoreConflict)
    others = [g for i, g in enumerate(got) if i != 3]
    assert all(isinstance(g, UUID) for g in others)
    assert len(set(others)) == 9 and taken not in others
    assert sizes == [1] * 9
    row = await env.one(
        "SELECT count(*) AS n FROM workspaces WHERE owner_id = %s AND NOT deleted", env.member_id
    )
    assert row["n"] == 10
