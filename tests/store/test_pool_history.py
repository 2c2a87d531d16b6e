"""Pool-size history and pool latencies on a real PostgreSQL with the fake clock: the reconciler samples every
pool in one statement (none when nothing changed, all again every ten minutes), retention prunes, the reader
returns each preset's series in order across template versions, claims record their latency, and another
organization's preset reads as nothing through the service functions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from prebuildd.prebuilds.claim import CreateRequest
from prebuildd.prebuilds.history import pool_history, preset_latencies
from prebuildd.store import identity as identity_store
from prebuildd.store import pool_history as store
from tests.support.env import Env
from tests.support.pools import converge, creator, reconciler

TWO_POOLS = """
provisioner = "echo"
[[presets]]
name = "small"
[presets.prebuilds]
instances = 2
[[presets]]
name = "large"
[presets.prebuilds]
instances = 1
"""


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the statements the pool-history repository sends (its one write helper is counted)."""
    sent: list[str] = []
    original: Callable[..., Awaitable[int]] = store.execute

    async def counting(conn: Any, query: str, *args: Any, **kwargs: Any) -> int:
        sent.append(query)
        return await original(conn, query, *args, **kwargs)

    monkeypatch.setattr(store, "execute", counting)
    return sent


async def _presets(env: Env) -> dict[str, UUID]:
    async with env.db.transaction() as conn:
        cur = await conn.execute(
            "SELECT p.name, p.id FROM template_version_presets p JOIN templates t ON t.active_version_id = "
            "p.template_version_id"
        )
        return {r["name"]: r["id"] for r in await cur.fetchall()}


async def _samples(env: Env) -> list[tuple[str, int, int, int]]:
    async with env.db.transaction() as conn:
        cur = await conn.execute(
            "SELECT preset_name, desired, running, eligible FROM pool_size_samples ORDER BY at, preset_name"
        )
        return [(r["preset_name"], r["desired"], r["running"], r["eligible"]) for r in await cur.fetchall()]


async def test_a_cycle_samples_every_pool_in_one_statement_and_a_quiet_cycle_none(
    env: Env, statements: list[str]
) -> None:
    await env.push("t", TWO_POOLS)
    rec = reconciler(env)
    first = await rec.run_cycle()
    assert first is not None and first.created == 3
    # one statement for both pools; the hourly pruning also runs in a process's first cycle
    assert statements == ["pool_history.record", "pool_history.prune"]
    assert first.sampled == 2
    assert await _samples(env) == [("large", 1, 0, 0), ("small", 2, 0, 0)]

    statements.clear()
    again = await rec.run_cycle()  # the creates are still pending: same counts, nothing to write
    assert again is not None and again.sampled == 0 and statements == []

    await env.run_jobs()
    env.clock.advance(30)
    ready = await rec.run_cycle()
    assert ready is not None and ready.sampled == 2 and statements == ["pool_history.record"]
    assert (await _samples(env))[2:] == [("large", 1, 1, 1), ("small", 2, 2, 2)]

    statements.clear()
    env.clock.advance(minutes=9)
    assert (await rec.run_cycle()).sampled == 0  # type: ignore[union-attr]
    env.clock.advance(minutes=2)  # ten minutes since the last sample: every pool again, still one statement
    steady = await rec.run_cycle()
    assert steady is not None and steady.sampled == 2 and statements == ["pool_history.record"]
    assert len(await _samples(env)) == 6


async def test_only_the_pool_that_changed_is_sampled(env: Env, statements: list[str]) -> None:
    await env.push("t", TWO_POOLS)
    rec = reconciler(env)
    await converge(env, rec)
    before = len(await _samples(env))
    async with env.db.transaction() as conn:
        await conn.execute("UPDATE template_version_presets SET desired_instances = 4 WHERE name = 'small'")
    statements.clear()
    env.clock.advance(5)
    result = await rec.run_cycle()
    assert result is not None and result.sampled == 1 and statements == ["pool_history.record"]
    rows = await _samples(env)
    assert len(rows) == before + 1 and rows[-1] == ("small", 4, 2, 2)


async def test_samples_older_than_the_retention_are_pruned(env: Env) -> None:
    pushed = await env.push("t", TWO_POOLS)
    rec = reconciler(env, pool_history_retention=timedelta(days=2).total_seconds())
    await converge(env, rec)
    now = env.clock.now()
    async with env.db.transaction() as conn:
        await store.record(
            conn,
            now - timedelta(days=3),
            [store.NewPoolSample(pushed.template_id, "small", 9, 9, 9)],
        )
        await store.record(
            conn, now - timedelta(days=1), [store.NewPoolSample(pushed.template_id, "small", 8, 8, 8)]
        )
    env.clock.advance(hours=2)  # the pruning runs at most hourly
    await rec.run_cycle()
    rows = await _samples(env)
    assert ("small", 8, 8, 8) in rows and ("small", 9, 9, 9) not in rows


async def test_the_reader_returns_each_presets_series_in_order_from_the_window_start(env: Env) -> None:
    pushed = await env.push("t", TWO_POOLS)
    presets = await _presets(env)
    now = env.clock.now()
    async with env.db.transaction() as conn:
        for hours_ago, small, large in ((30, 1, 5), (20, 2, 6), (10, 3, 7), (1, 4, 8)):
            await store.record(
                conn,
                now - timedelta(hours=hours_ago),
                [
                    store.NewPoolSample(pushed.template_id, "small", small, small, small),
                    store.NewPoolSample(pushed.template_id, "large", large, large - 1, 0),
                ],
            )
    unknown = uuid4()
    got = await pool_history(env.db, [presets["small"], presets["large"], unknown], hours=24, clock=env.clock)
    assert got[unknown] == []
    small = got[presets["small"]]
    # the sample of 30 h ago is the size when the window opened: dated at its start
    assert [s.at for s in small] == [now - timedelta(hours=h) for h in (24, 20, 10, 1)]
    assert [s.desired for s in small] == [1, 2, 3, 4]
    large = got[presets["large"]]
    assert [(s.desired, s.running, s.eligible) for s in large] == [(5, 4, 0), (6, 5, 0), (7, 6, 0), (8, 7, 0)]
    short = await pool_history(env.db, [presets["small"]], hours=5, clock=env.clock)
    assert [s.desired for s in short[presets["small"]]] == [3, 4]

    # a new version makes new preset rows: the pool's history is read through them
    await env.push("t", TWO_POOLS.replace("instances = 2", "instances = 3"))
    newer = await _presets(env)
    assert newer["small"] != presets["small"]
    again = await pool_history(env.db, [newer["small"]], hours=24, clock=env.clock)
    assert [s.desired for s in again[newer["small"]]] == [1, 2, 3, 4]


async def test_claims_record_their_latency_and_prebuilds_their_time_to_ready(env: Env) -> None:
    pushed = await env.push("t", TWO_POOLS)
    rec = reconciler(env)
    await converge(env, rec)
    await rec.run_cycle()  # records the times to ready
    presets = await _presets(env)
    make = creator(rec.services)
    for name in ("a", "b"):
        result = await make.create_workspace(
            CreateRequest(
                env.org_id, env.member_id, env.member_id, pushed.template_id, name, presets["small"]
            )
        )
        assert result.claimed
    got = await preset_latencies(env.db, presets["small"], clock=env.clock)
    assert len(got.claim_ms) == 2 and all(ms > 0 for ms in got.claim_ms)
    assert len(got.ready_s) == 2 and all(s >= 0 for s in got.ready_s)
    other = await preset_latencies(env.db, presets["large"], clock=env.clock)
    assert other.claim_ms == [] and len(other.ready_s) == 1
    env.clock.advance(hours=25)
    assert await preset_latencies(env.db, presets["small"], clock=env.clock) == type(got)([], [])


async def test_another_organizations_preset_reads_as_nothing(env: Env) -> None:
    pushed = await env.push("t", TWO_POOLS)
    rec = reconciler(env)
    await converge(env, rec)
    await rec.run_cycle()
    presets = await _presets(env)
    async with env.db.transaction() as conn:
        other = await identity_store.insert_organization(
            conn, id=uuid4(), name="other", display_name="", is_default=False, now=env.clock.now()
        )
    mine = await pool_history(env.db, [presets["small"]], clock=env.clock, organization_ids=[env.org_id])
    assert mine[presets["small"]]
    theirs = await pool_history(env.db, [presets["small"]], clock=env.clock, organization_ids=[other.id])
    assert theirs == {presets["small"]: []}
    assert (
        await preset_latencies(env.db, presets["small"], clock=env.clock, organization_ids=[env.org_id])
    ).ready_s
    foreign = await preset_latencies(env.db, presets["small"], clock=env.clock, organization_ids=[other.id])
    assert (foreign.claim_ms, foreign.ready_s) == ([], [])
    assert pushed.template_id  # the pool exists: only the scope hides it
