"""Durable completions and daemon identities on a real PostgreSQL: a repeated completion is accepted once and
written once, a stale one is refused, a daemon that registers fails its earlier run's jobs at once, a database
outage at completion loses nothing, and lost daemons refill their pool at once."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import psycopg
from structlog.testing import capture_logs

from prebuildd.provisioner.daemon import DaemonOptions, ProvisionerDaemon
from prebuildd.provisioner.registry import available_provisioners
from prebuildd.queue.pg import PgJobQueue
from prebuildd.queue.port import JobOutcome
from prebuildd.store import channels
from prebuildd.store.errors import StoreUnavailable
from tests.support.env import Env
from tests.support.pools import POOL, operations, pool, reconciler
from tests.support.waiting import wait_for

ECHO = 'provisioner = "echo"\n'


async def _build(env: Env, name: str = "ws") -> UUID:
    pushed = await env.push(name, ECHO)
    return (await env.create(pushed.template_id, name)).job_id


async def test_a_repeated_build_completion_is_accepted_once_and_written_once(env: Env) -> None:
    job_id = await _build(env)
    assert await env.queue.acquire("r/embedded-0#aaaa", ["echo"], {}) is not None
    first = JobOutcome(state=b"state-1", outputs={"url": "http://one"})
    assert await env.queue.complete(job_id, "r/embedded-0#aaaa", first)
    written = await env.job(job_id)
    env.clock.advance(60)
    # The answer to the first call was lost; the daemon sends the same outcome (or even another) again.
    again = JobOutcome(state=b"state-2", outputs={"url": "http://two"})
    assert await env.queue.complete(job_id, "r/embedded-0#aaaa", again)
    assert await env.job(job_id) == written  # nothing written again (completed_at, updated_at unchanged)
    build = await env.one("SELECT state, outputs FROM workspace_builds WHERE job_id = %s", job_id)
    assert (build["state"], build["outputs"]) == (b"state-1", {"url": "http://one"})
    # Another worker (another run of the same identity included) is refused.
    assert not await env.queue.complete(job_id, "r/embedded-0#bbbb", first)


async def test_a_repeated_import_completion_is_accepted_and_imports_once(env: Env) -> None:
    pushed = await env.push("t", ECHO, run_import=False)
    assert await env.queue.acquire("w#1", ["echo"], {}) is not None
    assert await env.queue.complete(pushed.job_id, "w#1", JobOutcome())
    written = await env.job(pushed.job_id)
    env.clock.advance(60)
    assert await env.queue.complete(pushed.job_id, "w#1", JobOutcome())
    assert await env.job(pushed.job_id) == written


async def test_a_completion_after_a_stale_failure_is_refused_even_to_the_same_worker(env: Env) -> None:
    job_id = await _build(env)
    assert await env.queue.acquire("zombie#1", ["echo"], {}) is not None
    env.clock.advance(minutes=10)
    assert await env.queue.fail_stale(timedelta(minutes=5)) == [job_id]
    failed = await env.job(job_id)
    assert failed["failure_class"] == "daemon_lost"
    assert "provisioner stopped responding" in failed["error"] and "zombie#1" in failed["error"]
    assert not await env.queue.complete(job_id, "zombie#1", JobOutcome(state=b"late"))
    assert not await env.queue.complete(job_id, "zombie#1", JobOutcome(state=b"late"))
    assert await env.job(job_id) == failed


async def test_registering_fails_the_jobs_of_the_identitys_earlier_runs_at_once(env: Env) -> None:
    pushed = await env.push("t", ECHO)
    jobs = [(await env.create(pushed.template_id, f"ws{i}")).job_id for i in range(5)]
    holders = [
        "r1/embedded-0#old",  # an earlier run of the identity: failed
        "r1/embedded-0#new",  # the run that registers: kept
        "r1/embedded-01#old",  # another identity that starts alike: kept
        "r1/embedded-0#old@key:00000000-0000-0000-0000-000000000001",  # a standalone daemon's: kept
        "r2/embedded-0#old",  # another replica: kept
    ]
    for holder in holders:
        assert await env.queue.acquire(holder, ["echo"], {}) is not None
    listen = await env.db.connect()
    try:
        await listen.execute(f"LISTEN {channels.JOB_COMPLETED}")
        with capture_logs() as logs:
            assert await env.queue.register("r1/embedded-0", "r1/embedded-0#new") == [jobs[0]]
        payloads = [n.payload async for n in listen.notifies(timeout=5, stop_after=1)]
    finally:
        await listen.close()
    assert [json.loads(p)["job_id"] for p in payloads] == [str(jobs[0])]  # the reconciler is kicked
    assert [e["job_id"] for e in logs if e["event"] == "job.failed_daemon_restarted"] == [str(jobs[0])]
    failed = await env.job(jobs[0])
    assert failed["job_status"] == "failed" and failed["failure_class"] == "daemon_lost"
    assert "its daemon r1/embedded-0 restarted" in failed["error"]
    assert failed["completed_at"] == env.clock.now()  # at once, no stale timeout
    for job_id in jobs[1:]:
        assert (await env.job(job_id))["job_status"] == "running"
    # The standalone daemon's earlier run is failed only through its own key.
    assert (
        await env.queue.fail_earlier_runs(
            "r1/embedded-0",
            "r1/embedded-0#x@key:00000000-0000-0000-0000-000000000001",
            key_suffix="@key:other",
        )
        == []
    )
    assert await env.queue.fail_earlier_runs(
        "r1/embedded-0",
        "r1/embedded-0#x@key:00000000-0000-0000-0000-000000000001",
        key_suffix="@key:00000000-0000-0000-0000-000000000001",
    ) == [jobs[3]]
    assert not await env.queue.complete(jobs[0], "r1/embedded-0#old", JobOutcome())


class OutageAtCompletion(PgJobQueue):
    """The real queue, whose database goes away for the first ``down`` completions (as a restarting PostgreSQL
    makes psycopg fail: StoreUnavailable). Heartbeats still reach it, as they do once it is back."""

    def __init__(self, queue: PgJobQueue, down: int) -> None:
        super().__init__(queue.db, queue.clock)
        self.down = down
        self.attempts = 0

    async def complete(self, job_id: UUID, worker_id: str, outcome: JobOutcome) -> bool:
        self.attempts += 1
        if self.attempts <= self.down:
            raise StoreUnavailable(psycopg.OperationalError("the database system is shutting down"))
        return await super().complete(job_id, worker_id, outcome)


async def test_a_build_finished_while_the_database_is_away_is_completed_when_it_is_back(
    env: Env, tmp_path: Path
) -> None:
    job_id = await _build(env)
    queue = OutageAtCompletion(env.queue, down=4)
    options = DaemonOptions(
        identity="r/embedded-0",
        heartbeat_interval=0.05,
        poll_interval=0.05,
        work_root=tmp_path,
        retry_first=0.05,
        retry_max=0.1,
    )
    daemon = ProvisionerDaemon(queue, available_provisioners(), options)
    with capture_logs() as logs:
        task = asyncio.create_task(daemon.run())
        try:

            async def completed() -> bool:
                return (await env.job(job_id))["job_status"] == "succeeded"

            await wait_for(completed, what="the build completed after the outage")
            assert not task.done()
        finally:
            daemon.stop()
            await asyncio.wait_for(task, timeout=10)
    assert queue.attempts == 5
    build = await env.one("SELECT state FROM workspace_builds WHERE job_id = %s", job_id)
    assert build["state"] == b"echo-state:1"  # the state the build produced was not lost
    assert [e["dependency"] for e in logs if e["event"] == "component.unavailable"] == ["database"]
    assert len([e for e in logs if e["event"] == "component.recovered"]) == 1


class AnswerLost(PgJobQueue):
    """The real queue, where the first completion commits but its answer never reaches the daemon."""

    def __init__(self, queue: PgJobQueue) -> None:
        super().__init__(queue.db, queue.clock)
        self.attempts = 0

    async def complete(self, job_id: UUID, worker_id: str, outcome: JobOutcome) -> bool:
        self.attempts += 1
        accepted = await super().complete(job_id, worker_id, outcome)
        if self.attempts == 1:
            raise StoreUnavailable(psycopg.OperationalError("server closed the connection unexpectedly"))
        return accepted


async def test_a_completion_whose_answer_was_lost_is_repeated_and_accepted(env: Env, tmp_path: Path) -> None:
    job_id = await _build(env)
    queue = AnswerLost(env.queue)
    options = DaemonOptions(
        identity="r/embedded-0",
        heartbeat_interval=0.02,
        poll_interval=0.05,
        work_root=tmp_path,
        retry_first=600.0,
    )
    daemon = ProvisionerDaemon(queue, available_provisioners(), options)
    with capture_logs() as logs:
        task = asyncio.create_task(daemon.run())
        try:
            # The retry would wait 10 minutes, but the heartbeat finds the job is not running any more: one more
            # attempt at once, repeated by the same worker, is accepted without writing anything.
            await wait_for(lambda: daemon.jobs_done == 1, timeout=60, what="the completion accepted")
        finally:
            daemon.stop()
            await asyncio.wait_for(task, timeout=10)
    assert queue.attempts == 2
    assert (await env.job(job_id))["job_status"] == "succeeded"
    assert [e["job_id"] for e in logs if e["event"] == "job.complete_repeated"] == [str(job_id)]
    assert not [e for e in logs if e["event"] == "daemon.job_lost"]


async def _lose_running_creations(env: Env, worker_id: str) -> list[UUID]:
    """Every pending prebuild creation is taken by ``worker_id``, whose daemon then dies."""
    async with env.db.transaction() as conn:
        cur = await conn.execute(
            "UPDATE provisioner_jobs SET started_at = %s, worker_id = %s, updated_at = %s "
            "WHERE job_status = 'pending' AND type = 'workspace_build' RETURNING id",
            (env.clock.now(), worker_id, env.clock.now()),
        )
        return [row["id"] for row in await cur.fetchall()]


async def test_jobs_failed_as_stale_are_daemon_lost_and_the_pool_refills_at_once(env: Env) -> None:
    await env.push("t", POOL)
    rec = reconciler(env, backoff_interval=60.0)
    assert (await rec.run_cycle()).created == 3  # type: ignore[union-attr]
    lost = await _lose_running_creations(env, "r/embedded-0#dead")
    env.clock.advance(minutes=6)
    assert sorted(await env.queue.fail_stale(timedelta(minutes=5))) == sorted(lost)
    for job_id in lost:
        assert (await env.job(job_id))["failure_class"] == "daemon_lost"
    # No clock advance: nothing backs the preset off, the three are replaced in the next cycle.
    result = await rec.run_cycle()
    assert result is not None and result.created == 3
    await env.run_jobs()
    assert (await pool(env))["running"] == 3


async def test_a_restarted_daemon_fails_its_jobs_at_once_and_the_pool_refills(env: Env) -> None:
    await env.push("t", POOL)
    rec = reconciler(env, backoff_interval=60.0)
    assert (await rec.run_cycle()).created == 3  # type: ignore[union-attr]
    lost = await _lose_running_creations(env, "r/embedded-0#run1")
    assert sorted(await env.queue.register("r/embedded-0", "r/embedded-0#run2")) == sorted(lost)
    result = await rec.run_cycle()  # same instant: no stale timeout, no backoff
    assert result is not None and result.created == 3


async def test_three_lost_daemons_in_a_row_back_the_preset_off_and_explain_says_why(env: Env) -> None:
    await env.push("t", POOL.replace("instances = 3", "instances = 1"))
    rec = reconciler(env, backoff_interval=60.0)
    for run in range(3):
        result = await rec.run_cycle()
        assert result is not None and result.created == 1, f"creation {run + 1} went at once"
        env.clock.advance(1)
        await _lose_running_creations(env, f"r/embedded-0#run{run}")
        env.clock.advance(1)
        assert len(await env.queue.register("r/embedded-0", f"r/embedded-0#run{run + 1}")) == 1
        env.clock.advance(1)
    result = await rec.run_cycle()
    assert result is not None and result.created == 0  # the template may be what kills its daemons
    status, _ = await operations(rec).explain(env.org_id, "t", "small", show_errors=True)
    assert status.blocked is not None
    assert "3 lost-daemon failures in a row, last: provisioner daemon lost" in status.blocked
    env.clock.advance(minutes=4)  # three intervals after the last loss
    result = await rec.run_cycle()
    assert result is not None and result.created == 1
