"""How a queued job wakes idle daemons: a few of the oldest it fits per notification (tags included), one more
for each job a daemon takes (a notification may stand for many jobs), and a daemon that lost a race first in line
next time. The process's poll is an hour apart in every test: only the notifications can get the jobs run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from prebuildd.domain.jobs import Transition
from prebuildd.provisioner.base import BuildContext, BuildResult, LogSink
from prebuildd.provisioner.daemon import DaemonOptions, ProvisionerDaemon
from prebuildd.queue.pg import WAKE_PER_NOTIFICATION, PgJobQueue
from prebuildd.store import channels
from prebuildd.store.listener import Listener
from prebuildd.workspaces.builder import BuildRequest
from tests.support.env import Env
from tests.support.provisioning import ECHO, Recording
from tests.support.waiting import wait_for


class Gate(Recording):
    """Each job holds its daemon until the gate opens."""

    def __init__(self) -> None:
        super().__init__()
        self.running: set[str] = set()
        self.open = asyncio.Event()

    async def run_build(self, ctx: BuildContext, log: LogSink) -> BuildResult:
        self.running.add(ctx.job_id)
        await self.open.wait()
        return await super().run_build(ctx, log)


@pytest.fixture
async def listener(env: Env) -> AsyncIterator[Listener]:
    listening = Listener(env.db, channels.ALL)
    await listening.start()
    try:
        yield listening
    finally:
        await listening.stop()


def fleet(
    queue: PgJobQueue,
    env: Env,
    recording: Recording,
    n: int,
    *,
    tags: dict[str, str] | None = None,
    name: str = "d",
) -> list[ProvisionerDaemon]:
    return [
        ProvisionerDaemon(
            queue,
            {"echo": recording},
            DaemonOptions(
                name=f"{name}{i}",
                poll_interval=3600,
                heartbeat_interval=1,
                work_root=env.tmp,
                tags=tags or {},
            ),
        )
        for i in range(n)
    ]


async def stop(daemons: list[ProvisionerDaemon], tasks: list[asyncio.Task[None]]) -> None:
    for d in daemons:
        d.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def test_jobs_queued_in_one_transaction_all_run_from_its_one_notification(
    env: Env, listener: Listener
) -> None:
    """PostgreSQL sends one notification for the six jobs of one transaction; it wakes two daemons, and each
    daemon that takes a job wakes one more, so that six daemons run them at once without the process's poll
    (the jobs hold their daemons until all six run: two daemons could not drain them one after the other)."""
    pushed = await env.push("t", ECHO)
    queue = PgJobQueue(env.db, env.clock, listener, poll_interval=3600)
    recording = Gate()
    daemons = fleet(queue, env, recording, 12)
    tasks = [asyncio.create_task(d.run()) for d in daemons]
    try:
        await wait_for(lambda: queue.waiting == 12)
        async with env.db.transaction() as conn:
            for i in range(6):
                await env.builder.build(
                    conn,
                    BuildRequest(
                        transition=Transition.START,
                        initiator_id=env.member_id,
                        owner_id=env.member_id,
                        template_id=pushed.template_id,
                        name=f"ws{i}",
                    ),
                )
        await wait_for(lambda: len(recording.running) == 6, timeout=20)
        recording.open.set()
        await wait_for(lambda: sum(recording.runs.values()) == 6, timeout=20)
        assert set(recording.runs.values()) == {1}
    finally:
        await stop(daemons, tasks)


async def test_a_notification_wakes_a_few_and_a_daemon_that_lost_the_race_is_first_next_time(
    env: Env, listener: Listener
) -> None:
    queue = PgJobQueue(env.db, env.clock, listener, poll_interval=3600)
    waits = {w: asyncio.create_task(queue.wait_for_jobs(3600, kinds=["echo"], worker_id=w)) for w in "abcd"}
    await wait_for(lambda: queue.waiting == 4)
    queue._on_notify(channels.JOB_QUEUED, "echo")
    await asyncio.sleep(0)
    woken = {w for w, t in waits.items() if t.done()}
    assert woken == {"a", "b"} and WAKE_PER_NOTIFICATION == 2  # the oldest two; c and d wait on
    for w in sorted(woken):  # their job went to another daemon: both find nothing, and wait again
        assert await queue.acquire(w, ["echo"], {}) is None
        waits[w] = asyncio.create_task(queue.wait_for_jobs(3600, kinds=["echo"], worker_id=w))
    await wait_for(lambda: queue.waiting == 4)
    queue._on_notify(channels.JOB_QUEUED, "echo")
    await asyncio.sleep(0)
    assert {w for w, t in waits.items() if t.done()} == {"a", "b"}  # first in line, ahead of c and d
    for t in waits.values():
        t.cancel()
    await asyncio.gather(*waits.values(), return_exceptions=True)


async def test_a_tagged_job_wakes_the_daemon_it_fits_however_many_others_wait_before_it(
    env: Env, listener: Listener
) -> None:
    queue = PgJobQueue(env.db, env.clock, listener, poll_interval=3600)
    recording = Recording()
    untagged = fleet(queue, env, recording, 4, name="plain")
    tasks = [asyncio.create_task(d.run()) for d in untagged]
    await wait_for(lambda: queue.waiting == 4)
    [eu] = fleet(queue, env, recording, 1, tags={"region": "eu"}, name="eu")
    tasks.append(asyncio.create_task(eu.run()))
    try:
        await wait_for(lambda: queue.waiting == 5)
        pushed = await env.push("t", 'provisioner = "echo"\ntags = { region = "eu" }\n', run_import=False)
        await wait_for(lambda: _import_done(env, pushed.job_id), timeout=20)
        assert ":eu0#" in (await env.job(pushed.job_id))["worker_id"]
    finally:
        await stop([*untagged, eu], tasks)


async def test_tags_too_long_for_a_notification_still_queue_the_job_and_wake_its_daemon(
    env: Env, listener: Listener
) -> None:
    """A notification carries at most 8,000 bytes: a job whose tags do not fit is still queued (the payload
    says so, and every idle daemon is woken)."""
    queue = PgJobQueue(env.db, env.clock, listener, poll_interval=3600)
    recording = Recording()
    untagged = fleet(queue, env, recording, 3, name="plain")
    long = "x" * 9000
    [tagged] = fleet(queue, env, recording, 1, tags={"pool": long}, name="long")
    daemons = [*untagged, tagged]
    tasks = [asyncio.create_task(d.run()) for d in daemons]
    try:
        await wait_for(lambda: queue.waiting == 4)
        pushed = await env.push(
            "t", f'provisioner = "echo"\ntags = {{ pool = "{long}" }}\n', run_import=False
        )
        await wait_for(lambda: _import_done(env, pushed.job_id), timeout=20)
        assert ":long0#" in (await env.job(pushed.job_id))["worker_id"]
    finally:
        await stop(daemons, tasks)


async def _import_done(env: Env, job_id: object) -> bool:
    return bool((await env.job(job_id))["completed_at"])  # type: ignore[arg-type]
