"""The job queue with real daemons: priority, SKIP LOCKED, stale jobs, cancel, tags, LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from prebuildd.domain.jobs import JobPriority, Transition
from prebuildd.provisioner.daemon import DaemonOptions, ProvisionerDaemon
from prebuildd.queue.pg import WAKE_PER_NOTIFICATION, PgJobQueue
from prebuildd.queue.port import AcquiredJob
from prebuildd.runtime.clock import FakeClock
from prebuildd.store import channels
from prebuildd.store import jobs as jobs_store
from prebuildd.store.db import Conn
from prebuildd.store.listener import Listener
from tests.support.env import Env
from tests.support.provisioning import ECHO, Recording
from tests.support.waiting import wait_for

BLOCKING_ECHO = 'provisioner = "echo"\n[echo]\nstart = { block = true, logs = ["working"] }\n'


async def _workspaces(
    env: Env, template_id: UUID, n: int, *, priority: int = JobPriority.HUMAN, prefix: str = "ws"
) -> list[UUID]:
    from prebuildd.workspaces.builder import BuildRequest

    jobs = []
    for i in range(n):
        req = BuildRequest(
            transition=Transition.START,
            initiator_id=env.member_id,
            owner_id=env.member_id,
            template_id=template_id,
            name=f"{prefix}{i}",
            priority=priority,
        )
        async with env.db.transaction() as conn:
            jobs.append((await env.builder.build(conn, req)).job_id)
        env.clock.advance(1)
    return jobs


async def test_human_jobs_before_prebuild_jobs_then_oldest(env: Env) -> None:
    pushed = await env.push("t", ECHO)
    prebuild_jobs = await _workspaces(env, pushed.template_id, 3, priority=JobPriority.PREBUILD, prefix="p")
    human_jobs = await _workspaces(env, pushed.template_id, 3, prefix="h")
    order = []
    while (job := await env.queue.acquire("w", ["echo"], {})) is not None:
        order.append(job.id)
    assert order == human_jobs + prebuild_jobs


async def test_concurrent_daemons_run_each_job_exactly_once(env: Env) -> None:
    pushed = await env.push("t", ECHO)
    jobs = await _workspaces(env, pushed.template_id, 60)
    recording = Recording()
    daemons = [
        ProvisionerDaemon(
            env.queue,
            {"echo": recording},
            DaemonOptions(name=f"d{i}", poll_interval=0.05, heartbeat_interval=1, work_root=env.tmp),
        )
        for i in range(6)
    ]
    tasks = [asyncio.create_task(d.run()) for d in daemons]

    async def all_done() -> bool:
        row = await env.one(
            "SELECT count(*) AS n FROM provisioner_jobs WHERE job_status = 'succeeded' "
            "AND type = 'workspace_build'"
        )
        return int(row["n"]) == len(jobs)

    await wait_for(all_done, what="all jobs to succeed")
    for d in daemons:
        d.stop()
    await asyncio.gather(*tasks)
    assert set(recording.runs) == {str(j) for j in jobs}
    assert set(recording.runs.values()) == {1}
    assert sum(d.jobs_done for d in daemons) == len(jobs)
    assert sum(1 for d in daemons if d.jobs_done) > 1, "more than one daemon should have taken jobs"


async def test_cancel_pending_job_never_starts(env: Env) -> None:
    pushed = await env.push("t", ECHO)
    [job_id] = await _workspaces(env, pushed.template_id, 1)
    assert await env.queue.cancel(job_id) == "canceled"
    assert await env.queue.acquire("w", ["echo"], {}) is None
    job = await env.job(job_id)
    assert job["job_status"] == "canceled" and job["started_at"] is None
    assert await env.queue.cancel(job_id) is None  # already finished


async def test_cancel_running_job_stops_it(env: Env) -> None:
    pushed = await env.push("t", BLOCKING_ECHO)
    [job_id] = await _workspaces(env, pushed.template_id, 1)
    acquired = await env.queue.acquire(env.daemon.worker_id, ["echo"], {})
    assert acquired is not None
    running = asyncio.create_task(env.daemon.run_job(acquired))
    await wait_for(lambda: _status_is(env, job_id, "running"))
    assert await env.queue.cancel(job_id) == "canceling"
    await asyncio.wait_for(running, 20)
    job = await env.job(job_id)
    assert job["job_status"] == "canceled", job
    assert any(line.output == "working" for line in await env.queue.logs(job_id))


async def _status_is(env: Env, job_id: UUID, status: str) -> bool:
    return (await env.job(job_id))["job_status"] == status


async def test_jobs_wait_for_a_daemon_with_their_kind_and_tags(env: Env) -> None:
    pushed = await env.push("t", 'provisioner = "echo"\ntags = { region = "eu" }\n', run_import=False)
    assert await env.queue.acquire("w", ["exec"], {"region": "eu"}) is None
    assert await env.queue.acquire("w", ["echo"], {}) is None
    assert await env.queue.acquire("w", ["echo"], {"region": "us"}) is None
    job = await env.queue.acquire("w", ["echo"], {"region": "eu", "gpu": "yes"})
    assert job is not None and job.id == pushed.job_id


async def test_a_new_job_wakes_an_idle_daemon_through_notify(env: Env) -> None:
    pushed = await env.push("t", ECHO)
    listener = Listener(env.db, channels.ALL)
    await listener.start()
    assert listener.connected.is_set()
    # The daemon's and the process's polls are an hour apart: only the notification can run this job in time.
    queue = PgJobQueue(env.db, env.clock, listener, poll_interval=3600)
    daemon = ProvisionerDaemon(
        queue,
        {"echo": Recording()},
        DaemonOptions(poll_interval=3600, heartbeat_interval=1, work_root=env.tmp),
    )
    task = asyncio.create_task(daemon.run())
    try:
        await wait_for(lambda: queue.waiting > 0)
        [job_id] = await _workspaces(env, pushed.template_id, 1)
        await wait_for(lambda: _status_is(env, job_id, "succeeded"), timeout=20)
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 10)
        await listener.stop()


async def test_idle_daemons_share_one_poll_and_a_notification_wakes_its_provisioners(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle daemons do not poll the database each on their own: one poll per process finds jobs queued without
    a notification, and a notification wakes a few idle daemons of its provisioner only."""
    pushed = await env.push("t", ECHO)
    # A listener deaf to queued jobs: only the process's poll can find them.
    listener = Listener(env.db, (channels.JOB_COMPLETED,))
    await listener.start()
    queue = PgJobQueue(env.db, env.clock, listener, poll_interval=0.05)
    calls = Counter[str]()
    acquire = queue.acquire

    async def counted_acquire(
        worker_id: str, kinds: Sequence[str], tags: Mapping[str, str]
    ) -> AcquiredJob | None:
        calls["acquire"] += 1
        return await acquire(worker_id, kinds, tags)

    monkeypatch.setattr(queue, "acquire", counted_acquire)
    pending_kinds = jobs_store.pending_kinds

    async def counted_poll(conn: Conn) -> list[jobs_store.PendingKind]:
        calls["poll"] += 1
        return await pending_kinds(conn)

    monkeypatch.setattr(jobs_store, "pending_kinds", counted_poll)
    recording = Recording()
    fleet = [
        ProvisionerDaemon(
            queue,
            {"echo": recording},
            DaemonOptions(poll_interval=3600, heartbeat_interval=1, work_root=env.tmp),
        )
        for _ in range(8)
    ]
    tasks = [asyncio.create_task(d.run()) for d in fleet]
    try:
        await wait_for(lambda: queue.waiting == 8)
        idle_acquires, polls = calls["acquire"], calls["poll"]
        await wait_for(lambda: calls["poll"] >= polls + 5)  # five polls of the process, for eight daemons
        assert calls["acquire"] == idle_acquires  # no daemon looked on its own meanwhile
        [job_id] = await _workspaces(env, pushed.template_id, 1)
        await wait_for(lambda: _status_is(env, job_id, "succeeded"), timeout=20)
        assert recording.runs == {str(job_id): 1}
        # The poll woke the idle daemons the job fits; it ran once. A notification of another provisioner's job
        # wakes none of them, one of theirs wakes the oldest few (not all eight: they would race for one job).
        await wait_for(lambda: queue.waiting == 8)
        before = calls["acquire"]
        queue._on_notify(channels.JOB_QUEUED, "terraform")
        assert queue.waiting == 8
        queue._on_notify(channels.JOB_QUEUED, "echo")
        await wait_for(lambda: queue.waiting == 8)
        assert calls["acquire"] == before + WAKE_PER_NOTIFICATION
    finally:
        for d in fleet:
            d.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        await listener.stop()


DAEMON_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from prebuildd.runtime.clock import SystemClock
    from prebuildd.provisioner.daemon import DaemonOptions, ProvisionerDaemon
    from prebuildd.queue.pg import WAKE_PER_NOTIFICATION, PgJobQueue
    from prebuildd.provisioner.registry import available_provisioners
    from prebuildd.store.db import Database

    async def main():
        db = await Database(sys.argv[1], min_size=1, max_size=2).open()
        queue = PgJobQueue(db, SystemClock())
        opts = DaemonOptions(name="doomed", heartbeat_interval=0.2, poll_interval=0.1, work_root=Path(sys.argv[2]))
        await ProvisionerDaemon(queue, available_provisioners(), opts).run()

    asyncio.run(main())
""")


async def test_a_daemon_killed_mid_job_gets_its_job_failed_as_stale(env: Env, database_url: str) -> None:
    env.clock.set(datetime.now(UTC))
    pushed = await env.push("t", BLOCKING_ECHO)
    [job_id] = await _workspaces(env, pushed.template_id, 1)
    proc = subprocess.Popen(
        [sys.executable, "-c", DAEMON_SCRIPT, database_url, str(env.tmp)], start_new_session=True
    )
    try:
        await wait_for(lambda: _status_is(env, job_id, "running"), what="the daemon to take the job")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    queue = PgJobQueue(env.db, env.clock)
    assert await queue.fail_stale(timedelta(minutes=5)) == []  # heartbeat is recent
    env.clock.advance(minutes=6)
    assert await queue.fail_stale(timedelta(minutes=5)) == [job_id]
    job = await env.job(job_id)
    assert job["job_status"] == "failed" and job["failure_class"] == "daemon_lost"
    assert "provisioner stopped responding" in job["error"] and "doomed" in job["error"]


async def test_a_late_completion_after_a_stale_failure_is_refused(env: Env) -> None:
    from prebuildd.queue.port import JobOutcome

    pushed = await env.push("t", ECHO)
    [job_id] = await _workspaces(env, pushed.template_id, 1)
    acquired = await env.queue.acquire("zombie", ["echo"], {})
    assert acquired is not None
    env.clock.advance(minutes=10)
    assert await env.queue.fail_stale(timedelta(minutes=5)) == [job_id]
    assert not await env.queue.complete(job_id, "zombie", JobOutcome())
    assert (await env.job(job_id))["job_status"] == "failed"


async def test_the_reaper_fails_a_stale_job_and_logs_it(env: Env) -> None:
    from structlog.testing import capture_logs

    from prebuildd.queue.reaper import StaleJobReaper

    pushed = await env.push("t", ECHO)
    [job_id] = await _workspaces(env, pushed.template_id, 1)
    assert await env.queue.acquire("gone", ["echo"], {}) is not None
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        raise asyncio.CancelledError  # one pass of the loop is enough

    reaper = StaleJobReaper(env.queue, env.clock, timedelta(minutes=5), sleep=sleep)
    with capture_logs() as logs:
        assert await reaper.reap_once() == []  # the job is not stale yet
        env.clock.advance(minutes=6)
        with contextlib.suppress(asyncio.CancelledError):
            await reaper.run()
    assert sleeps == [30.0]
    assert [e["job_id"] for e in logs if e["event"] == "job.failed_stale"] == [str(job_id)]
    job = await env.job(job_id)
    assert job["job_status"] == "failed" and job["failure_class"] == "daemon_lost"


async def test_every_timestamp_comes_from_the_injected_clock(
    env: Env, clock: FakeClock, tmp_path: Path
) -> None:
    clock.set(datetime(2030, 6, 1, 12, 0, tzinfo=UTC))
    pushed = await env.push("t", 'provisioner = "echo"\n[echo]\nstart = { logs = ["hello"] }\n')
    [job_id] = await _workspaces(env, pushed.template_id, 1)
    await env.run_jobs()
    job = await env.job(job_id)
    assert job["job_status"] == "succeeded"
    for column in ("created_at", "updated_at", "started_at", "completed_at"):
        assert job[column].year == 2030, column
    for line in await env.queue.logs(job_id):
        assert line.created_at.year == 2030


async def test_a_completion_notifies_the_same_payload_for_builds_and_imports(env: Env) -> None:
    # Builds complete in one statement (jobs.complete_build), imports on the general path: one payload format.
    import json

    listen = await env.db.connect()
    try:
        await listen.execute(f"LISTEN {channels.JOB_COMPLETED}")
        pushed = await env.push("t", ECHO)
        [job_id] = await _workspaces(env, pushed.template_id, 1)
        assert await env.run_jobs() == 1
        payloads = []
        async for notify in listen.notifies(timeout=5, stop_after=2):
            payloads.append(notify.payload)
    finally:
        await listen.close()
    workspace_id = (await env.one("SELECT workspace_id FROM workspace_builds WHERE job_id = %s", job_id))[
        "workspace_id"
    ]
    assert payloads == [
        json.dumps({"job_id": str(pushed.job_id), "type": "template_version_import", "workspace_id": None}),
        json.dumps({"job_id": str(job_id), "type": "workspace_build", "workspace_id": str(workspace_id)}),
    ]
