"""A pool read row by row (failed prebuilds kept as evidence) is not read again while its fingerprint is
unchanged: the snapshot reader reuses the rows it read last. Each change a row can see (an agent's state, a time
to ready recorded or gone, a claim, a job's status, a new build, a swap of one prebuild for another) must make the
kept reader's snapshot equal to a fresh reader's, and a cycle with no change must read no rows."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.domain.jobs import Transition
from prebuildd.prebuilds.snapshot import Snapshot, SnapshotReader, failure_policy
from prebuildd.runtime.config import ServerConfig
from tests.support.env import Env
from tests.support.pools import FAILING_BUILD, reconciler

MIXED = FAILING_BUILD.replace("instances = 4", "instances = 3")


def new_reader(env: Env) -> SnapshotReader:
    config = ServerConfig(postgres_url=env.db.url, data_dir=env.tmp)
    return SnapshotReader(env.db, env.clock, failure_policy(config))


def essence(snap: Snapshot) -> tuple[Any, ...]:
    """What a cycle plans from: every row, each preset's history and its snapshot."""
    return (
        sorted(snap.prebuilds, key=lambda r: r.workspace_id),
        {
            k: sorted(v, key=lambda r: (r.build_created_at, r.workspace_id))
            for k, v in snap.history_by_preset.items()
        },
        sorted(snap.snapshots, key=lambda s: s.preset_id),
    )


async def mixed_pool(env: Env) -> None:
    """Three failed prebuilds kept as evidence and three running ones: the pool is read row by row."""
    await env.push("t", MIXED)
    rec = reconciler(env, backoff_interval=1.0, failure_hard_limit=10)
    await rec.run_cycle()
    await env.run_jobs()
    async with env.db.transaction() as conn:
        await conn.execute("UPDATE template_versions SET manifest = replace(manifest, 'failure', 'success')")
    env.clock.advance(300)
    for _ in range(5):  # slow start after a failure: 1, then 2 creates
        result = await rec.run_cycle()
        await env.run_jobs()
        if result is not None and result.created == 0:
            break
    await rec.run_cycle()  # records the times to ready


async def latest(env: Env, status: str) -> list[Any]:
    async with env.db.transaction() as conn:
        cur = await conn.execute(
            "SELECT workspace_id, job_id FROM workspace_latest_builds WHERE owner_id = %s AND job_status = %s "
            "ORDER BY workspace_id",
            (PREBUILDS_USER_ID, status),
        )
        return list(await cur.fetchall())


async def sql(env: Env, statement: str, *args: object) -> None:
    async with env.db.transaction() as conn:
        await conn.execute(statement, args)  # type: ignore[arg-type]


async def add_agent(env: Env, lifecycle: str) -> None:
    [running, *_] = await latest(env, "succeeded")
    await sql(
        env,
        "INSERT INTO workspace_agents (id, workspace_id, name, token_hash, lifecycle, lifecycle_changed_at, "
        "created_at) VALUES (%s, %s, 'main', %s, %s, %s, %s)",
        uuid.uuid4(),
        running["workspace_id"],
        hashlib.sha256(uuid.uuid4().bytes).digest(),
        lifecycle,
        env.clock.now(),
        env.clock.now(),
    )


async def agent_ready(env: Env) -> None:
    env.clock.advance(30)
    await sql(env, "UPDATE workspace_agents SET lifecycle = 'ready', ready_at = %s", env.clock.now())


async def forget_ready_time(env: Env) -> None:
    [running, *_] = await latest(env, "succeeded")
    await sql(env, "DELETE FROM prebuild_ready_times WHERE workspace_id = %s", running["workspace_id"])


async def claim_one(env: Env) -> None:
    [*_, running] = await latest(env, "succeeded")
    await sql(
        env,
        "UPDATE workspaces SET owner_id = %s, name = %s, pool_preset_id = NULL WHERE id = %s",
        env.member_id,
        f"mine-{uuid.uuid4().hex[:8]}",
        running["workspace_id"],
    )


async def swap(env: Env) -> None:
    """One running prebuild claimed and a failed one succeeding, between two reads: the counts are as before."""
    await claim_one(env)
    [failed, *_] = await latest(env, "failed")
    await sql(
        env, "UPDATE provisioner_jobs SET error = NULL, failure_class = NULL WHERE id = %s", failed["job_id"]
    )


async def cancel_a_failed_job(env: Env) -> None:
    [failed, *_] = await latest(env, "failed")
    await sql(
        env,
        "UPDATE provisioner_jobs SET error = NULL, canceled_at = completed_at WHERE id = %s",
        failed["job_id"],
    )


async def delete_a_failed_prebuild(env: Env) -> None:
    [failed, *_] = await latest(env, "failed")
    await env.transition(failed["workspace_id"], Transition.DELETE)


async def finish_jobs(env: Env) -> None:
    await env.run_jobs()


CHANGES: list[tuple[str, Callable[[Env], Awaitable[None]]]] = [
    ("an agent that is not ready", lambda env: add_agent(env, "starting")),
    ("the agent ready", agent_ready),
    ("a time to ready gone", forget_ready_time),
    ("a claim", claim_one),
    ("a swap", swap),
    ("a job's status", cancel_a_failed_job),
    ("a new build in flight", delete_a_failed_prebuild),
    ("that build done", finish_jobs),
]


async def test_rows_are_kept_while_the_fingerprint_holds_and_read_again_on_any_change(env: Env) -> None:
    await mixed_pool(env)
    kept = new_reader(env)
    first = await kept.read()
    assert len(first.prebuilds) == 6, first.prebuilds  # three failed, three running: read row by row
    again = await kept.read()
    assert essence(again) == essence(first)
    assert again.queries == first.queries - 1  # no rows read: the creation history still is
    for name, change in CHANGES:
        await change(env)
        fresh = await new_reader(env).read()
        now = await kept.read()
        assert essence(now) == essence(fresh), name
        assert now.queries == fresh.queries, name  # read again
        still = await kept.read()
        assert essence(still) == essence(fresh), name
        if all(r.job_status not in ("pending", "running") for r in still.prebuilds):
            assert still.queries == fresh.queries - 1, name  # and kept once more
