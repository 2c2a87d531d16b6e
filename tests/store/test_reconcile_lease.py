"""Liveness of the reconcile cycle lease on a real PostgreSQL: a frozen holder (it keeps its connection open and
renews nothing, as a SIGSTOP'd process does) is taken over once its lease expires, a killed one at once; a frozen
holder that resumes mid-cycle never pushes a pool over its target; losing the lease to a live replica counts as an
attempt; a database outage is one line down and one back, retried on a short backoff; a crashing cycle is logged
and the loop goes on. Expiry is computed from the injected clock, so the tests move the fake clock past it instead
of waiting for it."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from prebuildd.domain.planner import Plan
from prebuildd.domain.snapshot import PresetRow
from prebuildd.prebuilds.executor import Executed
from prebuildd.prebuilds.loop import LoopSettings
from prebuildd.runtime.config import ServerConfig
from prebuildd.store import prebuilds as store
from prebuildd.store.errors import StoreTimeout
from tests.support.env import Env
from tests.support.pg import PgServer
from tests.support.pools import POOL, ReconcilerUnderTest, events_named, pool, reconciler
from tests.support.waiting import wait_for


def _frozen(rec: ReconcilerUnderTest) -> None:
    """From now on ``rec`` renews nothing: what the database sees of a stopped process (its connection stays)."""
    rec.settings = dataclasses.replace(rec.settings, lease_renew_every=3600.0)


def _lock_holder_gauge(rec: ReconcilerUnderTest) -> float:
    """``prebuildd_reconcile_lock_holder`` as /metrics shows it."""
    [line] = [
        line
        for line in rec.metrics.render().decode().splitlines()
        if line.startswith("prebuildd_reconcile_lock_holder ")
    ]
    return float(line.split()[1])


def test_at_the_defaults_a_frozen_holder_costs_at_most_30_seconds(env: Env) -> None:
    settings = LoopSettings.from_config(ServerConfig(postgres_url=env.db.url, data_dir=env.tmp), env.db)
    assert settings.interval == 60.0
    # The lease outlives the holder's last renewal by lease_duration; a waiting replica retries every lease_retry.
    assert settings.lease_duration + settings.lease_retry <= 30.0
    assert settings.lease_retry < settings.interval and settings.lease_renew < settings.lease_duration


async def test_replicas_taking_the_lease_at_once_get_exactly_one_holder(env: Env) -> None:
    replicas = [reconciler(env) for _ in range(8)]
    try:
        for _ in range(5):
            leases = await asyncio.gather(*(r._take_lease() for r in replicas))
            [winner] = [r for r, lease in zip(replicas, leases, strict=True) if lease.held]
            # A loser names the winner, or nobody when the winner's insert committed while its statement ran.
            assert {lease.holder for lease in leases} <= {winner.holder, None}
            assert await store.release_lease(winner._lock_conn, winner.holder)  # type: ignore[arg-type]
    finally:
        for r in replicas:
            await r._drop_lock_conn()


async def test_a_frozen_holder_is_taken_over_once_its_lease_expires(env: Env) -> None:
    await env.push("t", POOL)
    frozen, other = reconciler(env), reconciler(env)
    assert (await frozen._take_lease()).held  # it took the lease for a cycle, then stopped
    _frozen(frozen)
    lease = frozen.settings.lease_duration
    try:
        env.clock.advance(lease - 0.5)
        assert await other.run_cycle() is None  # a live lease, still
        assert other.last_attempt_at == env.clock.now()  # an attempt, so /readyz does not pull this replica
        assert other.last_success_at is None and not other.holds_lock and _lock_holder_gauge(other) == 0
        assert other.lease is not None and other.lease.holder == frozen.holder
        env.clock.advance(0.5)
        result = await other.run_cycle()
        assert result is not None and result.created == 3  # taken over: exactly at expiry, not later
        assert other.last_success_at == env.clock.now() and _lock_holder_gauge(other) == 1
        assert (await pool(env))["starting"] == 3
    finally:
        await frozen._drop_lock_conn()
        await other._drop_lock_conn()


async def test_the_loop_retries_a_held_lease_far_sooner_than_its_interval(env: Env) -> None:
    await env.push("t", POOL)
    frozen = reconciler(env, reconcile_lease=0.3)
    other = reconciler(env, reconcile_lease=0.3, reconcile_interval=3600)
    assert (await frozen._take_lease()).held
    _frozen(frozen)
    task = asyncio.create_task(other.run())
    try:
        await wait_for(lambda: other.last_attempt_at is not None, what="the first attempt")
        assert other.cycles == 0  # it found the lease held
        env.clock.advance(0.3)  # the frozen holder's lease expires
        # The interval is an hour and nothing kicks: only the retry of a held lease (a third of it) can take over.
        await wait_for(lambda: other.cycles >= 1, timeout=10, what="a takeover on the lease retry")
        assert (await pool(env))["starting"] == 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await frozen._drop_lock_conn()


async def test_a_killed_holders_lease_is_free_at_once(env: Env) -> None:
    await env.push("t", POOL)
    killed, other = reconciler(env), reconciler(env)
    assert (await killed._take_lease()).held
    assert await other.run_cycle() is None
    await killed._drop_lock_conn()  # the process died: the kernel closed its connection

    async def taken_over() -> bool:  # the server notices the closed connection within milliseconds
        return await other.run_cycle() is not None

    await wait_for(taken_over, timeout=10, what="the takeover of a lease whose holder's connection is gone")
    assert other.lease is not None and other.lease.acquired_at == env.clock.now()  # no expiry was waited for
    await other._drop_lock_conn()


async def test_a_frozen_holder_resuming_mid_cycle_never_pushes_a_pool_over_target(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    await env.push("t", POOL)
    frozen, other = reconciler(env), reconciler(env)
    _frozen(frozen)
    at_gate, resume = asyncio.Event(), asyncio.Event()
    execute = frozen.executor.execute

    async def stops_before_its_actions(preset: PresetRow, plan: Plan) -> Executed:
        at_gate.set()
        await resume.wait()
        return await execute(preset, plan)

    monkeypatch.setattr(frozen.executor, "execute", stops_before_its_actions)
    with capture_logs() as logs:
        stale = asyncio.create_task(frozen.run_cycle())  # planned "create 3" from its snapshot, then froze
        await asyncio.wait_for(at_gate.wait(), timeout=20)
        assert await other.run_cycle() is None
        env.clock.advance(frozen.settings.lease_duration)
        taken = await other.run_cycle()
        assert taken is not None and taken.created == 3
        resume.set()  # the frozen replica wakes up and runs its stale plan
        result = await asyncio.wait_for(stale, timeout=20)
    assert result is not None and result.created == 0  # the re-count under the preset lock refused all three
    assert (await pool(env)) == {"running": 0, "starting": 3, "deleting": 0, "total": 3}
    skipped = events_named(logs, "prebuild.create_skipped")
    assert skipped and all(e["reason"].startswith("target already met") for e in skipped)
    [lost] = events_named(
        logs, "reconcile.lease_lost"
    )  # it says so when it gives back a lease it no longer has
    assert lost["holder"] == frozen.holder
    assert not frozen.holds_lock and _lock_holder_gauge(frozen) == 0
    await frozen._drop_lock_conn()
    await other._drop_lock_conn()


async def test_a_holder_that_finds_its_lease_taken_mid_cycle_stops_starting_actions(env: Env) -> None:
    await env.push("t", POOL)
    # Expiry runs on the fake clock, but each renewal statement is bounded in real time by a third of the lease:
    # 3 s (a 1 s bound) keeps a loaded machine from failing a renewal on its own and muddling the takeover.
    rec = reconciler(env, reconcile_lease=3.0)
    read = rec.reader.read

    async def cut_off_while_reading() -> Any:
        snap = await read()
        # Meanwhile its lease expired and another replica took it (written as that replica would).
        async with env.db.transaction() as conn:
            await conn.execute("UPDATE reconcile_leases SET holder = 'another-replica'")
        await wait_for(lambda: rec._lease_lost, timeout=10, what="the holder's renewal noticing the takeover")
        return snap

    rec.reader.read = cut_off_while_reading  # type: ignore[method-assign]
    with capture_logs() as logs:
        result = await rec.run_cycle()
    assert result is not None and result.created == 0  # it planned three creates and started none
    [lost] = events_named(logs, "reconcile.lease_lost")
    assert lost["taken_by"] == "another-replica" and not rec.holds_lock and _lock_holder_gauge(rec) == 0
    assert (await pool(env))["total"] == 0
    holder = await env.one("SELECT holder FROM reconcile_leases")
    assert holder["holder"] == "another-replica"  # not given back by the replica that lost it
    await rec._drop_lock_conn()


async def test_a_create_waits_a_bounded_time_for_a_preset_lock_held_by_a_frozen_transaction(env: Env) -> None:
    await env.push("t", POOL)
    rec = reconciler(env)
    rec.executor.lock_wait = 0.2
    preset = await env.one("SELECT id FROM template_version_presets WHERE name = 'small'")
    frozen = await env.db.connect()
    try:
        await frozen.set_autocommit(False)
        await frozen.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s::text, 7))", (preset["id"],))
        with capture_logs() as logs:
            result = await asyncio.wait_for(rec.run_cycle(), timeout=20)  # the cycle ends; it does not hang
        assert result is not None and result.created == 0
        assert len(events_named(logs, "prebuild.create_lock_busy")) == 1
    finally:
        await frozen.close()
    again = await rec.run_cycle()
    assert again is not None and again.created == 3
    await rec._drop_lock_conn()


async def test_the_server_ends_a_transaction_left_idle_holding_a_preset_lock(env: Env) -> None:
    await env.push("t", POOL)
    preset = await env.one("SELECT id FROM template_version_presets WHERE name = 'small'")
    frozen = await env.db.connect()
    await frozen.set_autocommit(False)
    pid = (await (await frozen.execute("SELECT pg_backend_pid() AS pid")).fetchone() or {})["pid"]
    await store.lock_preset(frozen, preset["id"], lock_wait=1.0, idle_timeout=0.3)  # then it froze

    async def ended() -> bool:
        row = await env.one("SELECT count(*) AS n FROM pg_stat_activity WHERE pid = %s", pid)
        return int(row["n"]) == 0

    await wait_for(ended, timeout=20, what="the server ending the idle transaction")
    async with env.db.transaction() as conn:  # the lock is free again
        await store.lock_preset(conn, preset["id"], lock_wait=1.0, idle_timeout=1.0)
    with pytest.raises(psycopg.Error):
        await frozen.execute("SELECT 1")
    await frozen.close()
    with pytest.raises(StoreTimeout):  # and a lock held by a live transaction is waited for at most lock_wait
        async with env.db.transaction() as holder, env.db.transaction() as waiter:
            await store.lock_preset(holder, preset["id"], lock_wait=1.0, idle_timeout=5.0)
            await store.lock_preset(waiter, preset["id"], lock_wait=0.1, idle_timeout=5.0)


async def test_a_database_outage_is_one_line_down_one_back_retried_on_a_short_backoff(
    env: Env, pg_server: PgServer, database_url: str
) -> None:
    await env.push("t", POOL)
    rec = reconciler(env, reconcile_interval=3600)
    rec.settings = dataclasses.replace(rec.settings, retry_initial=0.05, retry_max=0.2)
    name = database_url.rsplit("/", 1)[1]
    task = asyncio.create_task(rec.run())
    try:
        await wait_for(lambda: rec.cycles >= 1, what="the first cycle")
        with capture_logs() as logs:
            with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')  # type: ignore[arg-type]
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
                )
            rec.kick("test: the database is gone")
            # The interval is an hour: only the outage backoff makes these attempts.
            await wait_for(lambda: rec.faults.failures >= 4, timeout=20, what="attempts on the short backoff")
            assert rec.faults.down and not rec.holds_lock and rec.last_attempt_at is not None
            cycles = rec.cycles
            with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')  # type: ignore[arg-type]
            await wait_for(
                lambda: not rec.faults.down and rec.cycles > cycles,
                timeout=30,
                what="a cycle once it is back",
            )
        outage = [e for e in logs if e["event"].startswith("component.")]
        assert [e["event"] for e in outage] == ["component.unavailable", "component.recovered"]
        assert all(e["component"] == "reconciler" for e in outage)
        assert not events_named(logs, "reconcile.cycle_crashed")
        text = rec.metrics.render().decode()
        assert 'prebuildd_component_down{component="reconciler",dependency="database"} 0.0' in text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_crashing_cycle_is_logged_with_its_traceback_and_the_loop_goes_on(env: Env) -> None:
    await env.push("t", POOL)
    rec = reconciler(env, reconcile_interval=3600)
    read = rec.reader.read
    crashes: list[int] = []

    async def crashes_once() -> Any:
        if not crashes:
            crashes.append(1)
            raise RuntimeError("a bug in the cycle")
        return await read()

    rec.reader.read = crashes_once  # type: ignore[method-assign]
    with capture_logs() as logs:
        task = asyncio.create_task(rec.run())
        try:
            await wait_for(lambda: bool(events_named(logs, "reconcile.cycle_crashed")), what="the crash line")
            assert not task.done() and rec.cycles == 0 and rec.last_attempt_at is not None
            rec.kick("test")
            await wait_for(lambda: rec.cycles >= 1, what="the next cycle")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    [crash] = events_named(logs, "reconcile.cycle_crashed")
    assert crash["log_level"] == "error" and crash["exc_info"] is True
    assert crash["error"] == "a bug in the cycle"
    assert not events_named(logs, "component.unavailable")  # a bug is not an outage


async def test_a_record_blocked_by_a_frozen_transaction_is_skipped_and_done_next_cycle(env: Env) -> None:
    await env.push("t", POOL)
    rec = reconciler(env, event_retention=timedelta(days=7).total_seconds())
    rec.recorder.lock_wait = 0.2
    assert await rec.run_cycle() is not None  # writes decision events, prunes once
    env.clock.advance(days=8)  # those events are now past the retention, and pruning is due
    frozen = await env.db.connect()
    try:
        await frozen.set_autocommit(False)
        await frozen.execute("SELECT id FROM events ORDER BY id LIMIT 1 FOR UPDATE")  # then it froze
        with capture_logs() as logs:
            result = await asyncio.wait_for(rec.run_cycle(), timeout=20)
        assert result is not None  # the cycle completed
        [busy] = events_named(logs, "reconcile.record_lock_busy")
        assert busy["what"] == "event pruning"
    finally:
        await frozen.close()
    assert await rec.run_cycle() is not None
    old = await env.one(
        "SELECT count(*) AS n FROM events WHERE created_at < %s", env.clock.now() - timedelta(days=7)
    )
    assert old["n"] == 0  # pruned on the next cycle
    await rec._drop_lock_conn()


async def test_a_cancel_that_arrives_with_a_kick_still_stops_the_loop(env: Env) -> None:
    # The server stops the loop with one cancel. Arriving in the same turn as a kick (jobs complete while the
    # server shuts down), it must not be lost: on Python 3.11, asyncio.wait_for returned the kick and dropped
    # the cancel, and the loop outlived the server's stop.
    rec = reconciler(env)
    waiting = asyncio.create_task(rec._wait(3600))
    await wait_for(lambda: len(rec._kicked._waiters) == 1, what="the loop waiting for a kick")
    rec.kick("a job completed")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
