"""The autoscaler end to end on a real PostgreSQL and the fake clock: claims and misses are recorded with the
claim itself, times to ready by the reconciler, a claim load grows the pool and it shrinks after the window; the
decided target survives a new reconciler (a restart or another replica)."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prebuildd.domain.autoscale import base_stock_size
from prebuildd.prebuilds.claim import CreateRequest
from prebuildd.store import prebuilds as store
from tests.support.env import Env
from tests.support.pools import POOL, converge, creator, operations, pool, reconciler

AUTOSCALED = """
provisioner = "echo"
[[presets]]
name = "small"
[presets.prebuilds]
instances = 1
autoscale = { min = 1, max = 10, target_hit_rate = 0.95 }
"""


async def _demand(env: Env) -> dict[str, int]:
    row = await env.one(
        "SELECT count(*) FILTER (WHERE kind = 'claim') AS claims, count(*) FILTER (WHERE kind = 'miss') AS misses "
        "FROM preset_demand"
    )
    return {k: int(v) for k, v in row.items()}


async def test_claims_and_misses_are_demand_records(env: Env) -> None:
    pushed = await env.push("t", AUTOSCALED)
    rec = reconciler(env)
    await converge(env, rec)
    make = creator(rec.services)

    preset = await _preset(env)

    def req(name: str) -> CreateRequest:
        return CreateRequest(env.org_id, env.member_id, env.member_id, pushed.template_id, name, preset)

    first = await make.create_workspace(req("a"))
    second = await make.create_workspace(req("b"))  # the pool of one is empty now: a miss
    assert (first.claimed, second.claimed) == (True, False)
    assert await _demand(env) == {"claims": 1, "misses": 1}
    ready = await env.one("SELECT count(*) AS n, min(preset_name) AS preset FROM prebuild_ready_times")
    assert (ready["n"], ready["preset"]) == (1, "small")


async def test_a_claim_load_grows_the_pool_and_it_shrinks_after_the_window(env: Env) -> None:
    pushed = await env.push("t", AUTOSCALED)
    rec = reconciler(env)
    await converge(env, rec)
    make = creator(rec.services)
    preset = await _preset(env)
    n = 0

    async def minute(claims: int) -> None:
        """One minute of load: claims, a cycle, builds that take 30 s, then the rest of the minute."""
        nonlocal n
        for _ in range(claims):
            n += 1
            await make.create_workspace(
                CreateRequest(env.org_id, env.member_id, env.member_id, pushed.template_id, f"w{n}", preset)
            )
        await rec.run_cycle()
        env.clock.advance(30)
        await env.run_jobs()
        env.clock.advance(30)

    for _ in range(40):  # 2 claims a minute for 40 minutes, builds ready in 30 s: mean 1 in flight
        await minute(2)
    snap = await rec.reader.read()
    [target] = snap.targets.values()
    assert target.decision is not None and target.decision.estimate is not None
    assert target.decision.estimate.lead_seconds == 30
    grown = target.snapshot.target_override
    assert grown is not None and grown >= 4  # P(Poisson(1) <= 3) = 0.98
    await rec.run_cycle()
    await env.run_jobs()
    assert (await pool(env))["running"] == grown
    [status] = (await operations(rec).pool_status(env.org_id, show_errors=True))[1]
    assert status.desired == grown
    assert status.target_source == "autoscale"
    assert status.sizing.startswith(f"desired {grown} (autoscale: ")
    assert "ready mean " in status.sizing and "p90 30s, target 95%" in status.sizing
    assert status.recommendation == f"pool {grown}, recommended {grown} for 95% hits"
    exposed = rec.services.metrics.render().decode()
    assert (
        f'prebuildd_autoscale_recommended{{organization="default",preset="small",template="t"}} {grown}.0'
        in exposed
    )
    assert 'source="autoscale"' in exposed and "prebuildd_autoscale_lead_time_seconds" in exposed

    # A new reconciler (a restart, another replica) continues from the stored decision.
    stored = await env.one("SELECT target, raised_at FROM preset_autoscale_state")
    assert stored["target"] == grown
    rec = reconciler(env)

    history = []
    for _ in range(55):  # no more claims: the rate falls, then 10 minutes of stabilization, then steps down
        await minute(0)
        state = await env.one("SELECT target, raised_at FROM preset_autoscale_state")
        history.append((env.clock.now(), state["target"], (await pool(env))["running"]))
    raised_at = stored["raised_at"]
    for (now, target, running), (_, before, _) in zip(history[1:], history, strict=False):
        if target < before:  # never within the window after the last rise, and by bounded steps
            assert now >= raised_at + timedelta(minutes=10)
            assert before - target <= -(-before // 4)
        assert running >= 1
    assert history[0][1] == grown
    assert (await pool(env))["running"] == 1
    left = await env.one("SELECT target, raised_at FROM preset_autoscale_state")
    assert left["target"] == 1 and left["raised_at"] <= env.clock.now() - timedelta(minutes=40)


async def _preset(env: Env) -> UUID:
    row = await env.one("SELECT id FROM template_version_presets WHERE name = 'small'")
    value: UUID = row["id"]
    return value


async def test_demand_is_kept_35_days_then_pruned_by_the_reconciler(env: Env) -> None:
    pushed = await env.push("t", AUTOSCALED)
    rec = reconciler(env)
    await converge(env, rec)
    now = env.clock.now()
    async with env.db.transaction() as conn:
        for days in (1, 34, 36, 40):
            await conn.execute(
                "INSERT INTO preset_demand (template_id, preset_name, kind, at) VALUES (%s, 'small', 'claim', %s)",
                (pushed.template_id, now - timedelta(days=days)),
            )
            await conn.execute(
                "INSERT INTO prebuild_ready_times (workspace_id, template_id, preset_name, created_at, ready_at) "
                "VALUES (gen_random_uuid(), %s, 'small', %s, %s)",
                (pushed.template_id, now - timedelta(days=days, minutes=4), now - timedelta(days=days)),
            )
    env.clock.advance(hours=2)  # the pruning runs at most hourly
    await rec.run_cycle()
    left = await env.one(
        "SELECT (SELECT count(*) FROM preset_demand) AS demand, "
        "(SELECT count(*) FROM prebuild_ready_times WHERE ready_at < %s) AS ready",
        now,
    )
    assert (left["demand"], left["ready"]) == (2, 2)  # 1 and 34 days old are kept


async def test_the_demand_aggregate_reads_windows_past_days_past_weeks_and_ready_times(env: Env) -> None:
    pushed = await env.push("t", AUTOSCALED)
    now = env.clock.now()
    ages = [
        timedelta(minutes=3),  # in the 5-minute window
        timedelta(minutes=8),  # in 10
        timedelta(minutes=100),  # in 120
        # the same time of day in past days: the coming 15 minutes, the coming hour, just before
        *[timedelta(days=1) - timedelta(minutes=5)] * 3,
        timedelta(days=2) - timedelta(minutes=14),
        *[timedelta(days=1) - timedelta(minutes=40)] * 2,
        timedelta(days=1) + timedelta(minutes=1),
        *[timedelta(days=7) - timedelta(minutes=10)] * 4,  # a week ago: a past day and a past week
        timedelta(days=8) - timedelta(minutes=5),  # beyond the 7 days and not a week: neither
    ]
    async with env.db.transaction() as conn:
        for age in ages:
            await conn.execute(
                "INSERT INTO preset_demand (template_id, preset_name, kind, at) VALUES (%s, 'small', 'claim', %s)",
                (pushed.template_id, now - age),
            )
        for seconds in (60, 120, 180, 240, 300, 360, 420, 480, 540, 600):
            await conn.execute(
                "INSERT INTO prebuild_ready_times (workspace_id, template_id, preset_name, created_at, ready_at) "
                "VALUES (gen_random_uuid(), %s, 'small', %s, %s)",
                (pushed.template_id, now - timedelta(hours=1, seconds=seconds), now - timedelta(hours=1)),
            )
    async with env.db.transaction() as conn:
        [d] = (await store.snapshot_demand(conn, [(pushed.template_id, "small")], now)).values()
    assert d.claims == (1, 2, 2, 2, 3) and d.misses == (0, 0, 0, 0, 0)
    assert (d.daily_next_15m, d.daily_next_60m) == (3 + 1 + 4, 3 + 1 + 2 + 4)
    assert (d.weekly_next_15m, d.weekly_next_60m) == (4, 4)
    assert d.ready_samples == 10 and d.ready_mean_seconds == 330
    assert d.ready_p90_seconds is not None and abs(d.ready_p90_seconds - 546) < 1e-6  # linear interpolation


async def test_the_demand_aggregate_reads_the_busy_minutes_of_the_burst_lookback(env: Env) -> None:
    """Minutes with at least BURST_MINUTE claims plus misses (claims and misses alike), oldest first, within the
    lookback: what the autoscaler learns recurring bursts from, in the same statement."""
    pushed = await env.push("t", AUTOSCALED)
    now = env.clock.now().replace(second=30, microsecond=0)
    minute = now.replace(second=0)
    records = [
        *[("claim", minute - timedelta(minutes=5, seconds=-s)) for s in (1, 2, 3, 4)],  # busy: 4
        *[("miss", minute - timedelta(minutes=5, seconds=-s)) for s in (10, 20)],  # misses count too: 6
        *[("claim", minute - timedelta(minutes=7, seconds=-s)) for s in (1, 2)],  # 2: not busy
        *[("miss", minute - timedelta(hours=30, seconds=-s)) for s in (1, 2, 3)],  # busy: 3
        *[
            ("claim", minute - timedelta(days=3, minutes=1, seconds=-s)) for s in (1, 2, 3)
        ],  # beyond the lookback
    ]
    async with env.db.transaction() as conn:
        for kind, at in records:
            await conn.execute(
                "INSERT INTO preset_demand (template_id, preset_name, kind, at) VALUES (%s, 'small', %s, %s)",
                (pushed.template_id, kind, at),
            )
    async with env.db.transaction() as conn:
        [d] = (await store.snapshot_demand(conn, [(pushed.template_id, "small")], now)).values()
    assert d.busy_minutes == (
        (minute - timedelta(hours=30), 3),
        (minute - timedelta(minutes=5), 6),
    )


async def test_a_static_pool_with_demand_shows_the_recommended_size(env: Env) -> None:
    # Autoscale off: the pool keeps instances = 3, and status, explain's service output and /metrics say what the
    # formula would size it to for 95% hits.
    pushed = await env.push("t", POOL)
    now = env.clock.now()
    async with env.db.transaction() as conn:
        for i in range(120):  # 1 claim a minute over the last 2 hours
            await conn.execute(
                "INSERT INTO preset_demand (template_id, preset_name, kind, at) VALUES (%s, 'small', 'claim', %s)",
                (pushed.template_id, now - timedelta(minutes=i + 0.5)),
            )
        for i in range(20):  # every prebuild ready 4 minutes after its creation
            ready = now - timedelta(minutes=5 * i + 1)
            await conn.execute(
                "INSERT INTO prebuild_ready_times (workspace_id, template_id, preset_name, created_at, ready_at) "
                "VALUES (gen_random_uuid(), %s, 'small', %s, %s)",
                (pushed.template_id, ready - timedelta(minutes=4), ready),
            )
    rec = reconciler(env)
    await rec.run_cycle()
    expected = base_stock_size(1.0, 240, 0.95)
    assert expected == 9  # P(Poisson(4) <= 8) = 0.979, P(Poisson(4) <= 7) = 0.949
    [status] = (await operations(rec).pool_status(env.org_id, show_errors=True))[1]
    assert (status.desired, status.target_source) == (3, "scheduled")
    assert (status.recommended, status.recommendation) == (expected, "pool 3, recommended 9 for 95% hits")
    exposed = rec.services.metrics.render().decode()
    labels = '{organization="default",preset="small",template="t"}'
    assert f"prebuildd_autoscale_recommended{labels} 9.0" in exposed
    assert f"prebuildd_autoscale_arrival_rate{labels} 1.0" in exposed
    assert f"prebuildd_autoscale_lead_time_seconds{labels} 240.0" in exposed
    assert f"prebuildd_prebuilds_hit_rate_1h{labels} 1.0" in exposed
    scheduled = 'prebuildd_preset_target_source{organization="default",preset="small",source="scheduled",template="t"}'
    assert f"{scheduled} 1.0" in exposed
