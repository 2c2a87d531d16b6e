"""The reconciler on a real PostgreSQL with the fake clock: convergence, replacement, recycling, inactive
versions, pause, and replicas racing with their cycle lease bypassed (tests/store/test_reconcile_lease.py has the
lease's liveness)."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.identity.users import DEFAULT_ORGANIZATION
from tests.support.env import Env
from tests.support.pools import POOL, converge, events_named, pool, prebuild_ids, reconciler
from tests.support.waiting import wait_for


async def test_converges_from_empty_then_does_nothing(env: Env) -> None:
    await env.push("t", POOL)
    rec = reconciler(env)
    with capture_logs() as logs:
        result = await rec.run_cycle()
    assert result is not None and result.created == 3
    [cycle] = events_named(logs, "reconcile.cycle")
    assert cycle["log_level"] == "info"
    assert (cycle["presets"], cycle["created"], cycle["deleted"], cycle["paused"]) == (1, 3, 0, False)
    assert len(events_named(logs, "prebuild.create")) == 3
    assert await pool(env) == {"running": 0, "starting": 3, "deleting": 0, "total": 3}
    again = await rec.run_cycle()
    assert again is not None and again.created == 0  # the starting ones count
    await env.run_jobs()
    assert (await pool(env))["running"] == 3
    idle = await rec.run_cycle()
    assert idle is not None and (idle.created, idle.deleted) == (0, 0)
    [plan] = idle.plans
    assert plan.reason == "at target: desired 3, running 3"


async def test_a_pool_at_rest_is_read_as_counts_and_a_lowered_target_reads_its_rows(env: Env) -> None:
    await env.push("t", POOL)
    rec = reconciler(env)
    await converge(env, rec)
    await rec.run_cycle()  # records the prebuilds' times to ready
    rest = await rec.run_cycle()
    assert rest is not None and rest.snapshot.prebuilds == []  # no row per prebuild for a pool at rest
    assert rest.queries == 3  # settings and queue depth, presets with their pools, demand
    [plan] = rest.plans
    assert (plan.state.running_valid, plan.state.eligible, plan.actions) == (3, 3, 0)
    async with env.db.transaction() as conn:
        await conn.execute("UPDATE template_version_presets SET desired_instances = 1")
    lowered = await rec.run_cycle()
    assert lowered is not None and lowered.deleted == 2  # the deletes name prebuilds: their rows were read
    assert len(lowered.snapshot.prebuilds) == 3 and lowered.queries == 4


async def test_a_claimed_prebuild_is_replaced(env: Env) -> None:
    await env.push("t", POOL)
    rec = reconciler(env)
    await converge(env, rec)
    claimed = (await prebuild_ids(env))[0]
    async with env.db.transaction() as conn:
        await conn.execute(
            "UPDATE workspaces SET owner_id = %s, name = 'mine' WHERE id = %s", (env.member_id, claimed)
        )
    result = await rec.run_cycle()
    assert result is not None and result.created == 1 and result.deleted == 0
    await env.run_jobs()
    assert (await pool(env))["running"] == 3
    assert claimed not in await prebuild_ids(env)


async def test_invalidation_recycles_every_prebuild(env: Env) -> None:
    await env.push("t", POOL)
    rec = reconciler(env)
    await converge(env, rec)
    old = set(await prebuild_ids(env))
    env.clock.advance(60)
    async with env.db.transaction() as conn:
        await conn.execute("UPDATE template_version_presets SET last_invalidated_at = %s", (env.clock.now(),))
    result = await rec.run_cycle()
    assert result is not None and (result.created, result.deleted) == (3, 3)
    await converge(env, rec)
    new = set(await prebuild_ids(env))
    assert len(new) == 3 and not (new & old)


async def test_ttl_expiry_recycles_prebuilds(env: Env) -> None:
    await env.push("t", POOL.replace("instances = 3", 'instances = 2\nttl = "1h"'))
    rec = reconciler(env)
    await converge(env, rec)
    first = set(await prebuild_ids(env))
    env.clock.advance(minutes=59)
    result = await rec.run_cycle()
    assert result is not None and result.deleted == 0
    env.clock.advance(minutes=2)
    result = await rec.run_cycle()
    assert result is not None and (result.created, result.deleted) == (2, 2)
    await converge(env, rec)
    assert not set(await prebuild_ids(env)) & first


async def test_inactive_version_cancels_pending_creates_and_deletes_its_prebuilds(env: Env) -> None:
    await env.push("t", POOL.replace("instances = 3", "instances = 2"))
    rec = reconciler(env)
    await converge(env, rec)  # v1 has 2 running prebuilds
    await env.push("t", POOL.replace("instances = 3", "instances = 1"), run_import=False)
    # v2 is not imported yet: v1 stays active. Make v1 create one more pending job by raising its target.
    async with env.db.transaction() as conn:
        await conn.execute(
            "UPDATE template_version_presets SET desired_instances = 3 WHERE template_version_id = "
            "(SELECT active_version_id FROM templates WHERE name = 't')"
        )
    assert (await rec.run_cycle()).created == 1  # type: ignore[union-attr]
    # Now import v2 (it activates) without running the pending v1 create.
    job = await env.queue.acquire(env.daemon.worker_id, ["echo"], {})
    assert job is not None and job.type == "template_version_import"
    await env.daemon.run_job(job)
    result = await rec.run_cycle()
    assert result is not None
    assert result.canceled == 1 and result.deleted == 2 and result.created == 1
    await converge(env, rec)
    rows = await env.one(
        "SELECT count(*) AS n FROM workspaces w WHERE w.owner_id = %s AND NOT w.deleted", PREBUILDS_USER_ID
    )
    assert rows["n"] == 1  # only v2's single prebuild is left
    canceled = await env.one(
        "SELECT count(*) AS n FROM provisioner_jobs WHERE job_status = 'canceled' AND started_at IS NULL"
    )
    assert canceled["n"] == 1


@pytest.mark.parametrize(
    "retire",
    [
        "UPDATE templates SET deprecated_at = now()",
        "UPDATE templates SET deleted = true",
    ],
    ids=["deprecated template", "deleted template"],
)
async def test_eligible_and_its_gauge_are_0_when_the_template_is_retired(env: Env, retire: str) -> None:
    # What a claim can take: a deprecated or deleted template's prebuilds are ready but not claimable.
    await env.push("t", POOL)
    rec = reconciler(env)
    await converge(env, rec)
    labels = {"organization": DEFAULT_ORGANIZATION, "template": "t", "preset": "small"}

    def gauge() -> float | None:
        return rec.services.metrics.registry.get_sample_value("prebuildd_prebuilds_eligible", labels)

    at_rest = await rec.run_cycle()
    assert at_rest is not None and at_rest.plans[0].state.eligible == 3 and gauge() == 3
    async with env.db.transaction() as conn:
        await conn.execute(retire)
    retired = await rec.run_cycle()
    assert retired is not None
    [plan] = retired.plans
    assert (plan.state.running_valid, plan.state.eligible, plan.state.desired) == (3, 0, 0)
    assert gauge() == 0
    assert retired.deleted == 3  # and the pool is removed


async def test_schedules_overlapping_at_another_hour_are_reported_at_import_and_fall_back_now(
    env: Env,
) -> None:
    # Only the every-hour schedule matches now; the two overlap three hours later. The set is wrong everywhere
    # (as the reference reads it): the pool keeps instances, and the push and the imported version say why.
    later = (env.clock.now().hour + 3) % 24
    manifest = POOL.replace(
        "instances = 3",
        f'instances = 1\nschedule = [{{ cron = "* * * * *", instances = 5 }}, {{ cron = "* {later} * * *", instances = 2 }}]',
    )
    pushed = await env.push("t", manifest)
    [warning] = pushed.warnings
    assert "overlap" in warning and "using instances" in warning, warning
    version = await env.one("SELECT warnings FROM template_versions WHERE id = %s", pushed.version_id)
    assert list(version["warnings"]) == [warning]
    result = await reconciler(env).run_cycle()
    assert result is not None
    [plan] = result.plans
    assert plan.state.desired == 1 and result.created == 1
    assert plan.state.schedule_problem is not None and "overlap" in plan.state.schedule_problem


async def test_pause_stops_every_action_and_resume_restores_the_pool(env: Env) -> None:
    await env.push("t", POOL)
    rec = reconciler(env)
    async with env.db.transaction() as conn:
        await conn.execute("UPDATE settings SET reconciliation_paused = true")
    result = await rec.run_cycle()
    assert result is not None and result.created == 0
    assert result.plans[0].blocked == "paused" and result.plans[0].state.desired == 3
    assert (await pool(env))["total"] == 0
    async with env.db.transaction() as conn:
        await conn.execute("UPDATE settings SET reconciliation_paused = false")
    await converge(env, rec)
    assert (await pool(env))["running"] == 3


async def test_the_cycle_lease_lets_one_replica_reconcile_at_a_time(env: Env) -> None:
    await env.push("t", POOL)
    first, second = reconciler(env), reconciler(env)
    assert (await first._take_lease()).held
    try:
        assert await second.run_cycle() is None
    finally:
        await first._release_lease()
        await first._drop_lock_conn()
    assert await second.run_cycle() is not None
    assert await second.run_cycle() is not None  # given back at the end of each cycle, and taken again
    await second._drop_lock_conn()


async def test_replicas_racing_without_the_cycle_lock_never_exceed_the_target(env: Env) -> None:
    manifest = POOL + '\n[[presets]]\nname = "big"\n[presets.prebuilds]\ninstances = 5\n'
    await env.push("t", manifest)
    replicas = [reconciler(env, use_cycle_lock=False) for _ in range(3)]
    rng = random.Random(7)
    targets = {"small": 3, "big": 5}
    for round_number in range(200):
        before = {name: await pool(env, name) for name in targets}
        await asyncio.gather(*(r.run_cycle() for r in replicas))
        for name, target in targets.items():
            counts = await pool(env, name)
            # Creates never push running + starting above the target; a lowered target is brought down by
            # deletes, so the pool may still be above it, but never above where it was before the cycle.
            ceiling = max(target, before[name]["running"] + before[name]["starting"])
            assert counts["running"] + counts["starting"] <= ceiling, (round_number, name, counts, target)
        # The world moves between rounds: some builds finish, some prebuilds get claimed, targets change.
        if rng.random() < 0.5:
            await env.run_jobs(limit=rng.randint(1, 6))
        if rng.random() < 0.2 and (ids := await prebuild_ids(env)):
            async with env.db.transaction() as conn:
                await conn.execute(
                    "UPDATE workspaces SET owner_id = %s, name = %s WHERE id = %s",
                    (env.member_id, f"claimed{round_number}", rng.choice(ids)),
                )
        if rng.random() < 0.05:
            name = rng.choice(list(targets))
            targets[name] = rng.randint(0, 6)
            async with env.db.transaction() as conn:
                await conn.execute(
                    "UPDATE template_version_presets SET desired_instances = %s WHERE name = %s",
                    (targets[name], name),
                )
        env.clock.advance(1)
    await env.run_jobs(limit=1000)
    for _ in range(3):
        await replicas[0].run_cycle()
        await env.run_jobs(limit=1000)
    for name, target in targets.items():
        counts = await pool(env, name)
        assert counts["running"] == target, (name, counts)


async def test_a_prebuild_job_completion_kicks_the_loop(env: Env) -> None:
    await env.push("t", POOL)
    rec = reconciler(env, reconcile_interval=3600)
    listener = rec.services.listener
    await listener.start()
    task = asyncio.create_task(rec.run())
    try:

        async def three_starting() -> bool:  # and the first cycle over, so that the count below is stable
            return rec.cycles >= 1 and (await pool(env))["starting"] == 3

        await wait_for(three_starting, what="the first cycle")
        cycles = rec.cycles
        await env.run_jobs(limit=1)

        async def cycled() -> bool:
            return rec.cycles > cycles

        await wait_for(cycled, timeout=60, what="a cycle kicked by the completion (the interval is an hour)")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await listener.stop()


async def test_events_record_decisions_and_are_pruned(env: Env) -> None:
    await env.push("t", POOL)
    rec = reconciler(env, event_retention=timedelta(days=7).total_seconds())
    await converge(env, rec)
    events = await env.one("SELECT count(*) AS n FROM events WHERE kind = 'reconcile.decision'")
    assert events["n"] >= 2
    first = await env.one("SELECT message FROM events ORDER BY id LIMIT 1")
    assert first["message"] == "creating 3: desired 3, running 0"
    env.clock.advance(days=8)
    await rec.run_cycle()
    old = await env.one(
        "SELECT count(*) AS n FROM events WHERE created_at < %s", env.clock.now() - timedelta(days=7)
    )
    assert old["n"] == 0
