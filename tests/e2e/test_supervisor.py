"""The supervisor: a background task that raises is logged at once and restarted with backoff (the pause is
injected, never slept), a daemon whose loop raises comes back, and stop() still stops everything."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from prebuildd.provisioner.daemon import ProvisionerDaemon
from prebuildd.runtime.config import ServerConfig
from prebuildd.server.process import Server
from prebuildd.server.supervisor import BackgroundService, RestartPolicy
from tests.support.api import API, push, wait_build, wait_imported
from tests.support.server import start_server
from tests.support.waiting import wait_for

ECHO = 'provisioner = "echo"\n'


class Sleeps:
    """The supervisor's sleep: records each pause; returns at once, or waits for ``release`` while ``hold``."""

    def __init__(self, on_sleep: Callable[[float], None] | None = None) -> None:
        self.delays: list[float] = []
        self.hold = False
        self.release = asyncio.Event()
        self.on_sleep = on_sleep

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep(seconds)
        if self.hold:
            await self.release.wait()
        else:
            await asyncio.sleep(0)


def _named(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


async def test_a_crashing_background_service_is_logged_at_once_and_restarted_with_backoff(
    database_url: str, tmp_path: Path
) -> None:
    calls = 0
    back = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RuntimeError(f"boom {calls}")
        back.set()
        await asyncio.Event().wait()

    with capture_logs() as logs:
        crashes_seen_at_sleep: list[int] = []
        sleeps = Sleeps(lambda _: crashes_seen_at_sleep.append(len(_named(logs, "server.task_crashed"))))
        running = await start_server(
            database_url,
            tmp_path / "server",
            provisioner_daemons=0,
            server_options={"sleep": sleeps, "restart_policy": RestartPolicy(first=1.0, factor=2.0, cap=3.0)},
            before_start=lambda server: server.add_background(BackgroundService("flaky", flaky)),
        )
        try:
            await wait_for(back.is_set, what="the service running again after three crashes")
            health = running.server.tasks["flaky"]
            assert health.running and health.restarts == 3
            metrics = running.server.services
            assert metrics is not None
            restarts = metrics.metrics.registry.get_sample_value(
                "prebuildd_task_restarts_total", {"task": "flaky"}
            )
            assert restarts == 3
        finally:
            await running.server.stop()
    crashed = _named(logs, "server.task_crashed")
    assert [(e["task"], e["error"]) for e in crashed] == [
        ("flaky", "RuntimeError: boom 1"),
        ("flaky", "RuntimeError: boom 2"),
        ("flaky", "RuntimeError: boom 3"),
    ]
    assert all(e["log_level"] == "error" and e["exc_info"] for e in crashed)
    # Each crash is logged before its pause begins, and the pauses double up to the cap.
    assert crashes_seen_at_sleep == [1, 2, 3]
    assert sleeps.delays == [1.0, 2.0, 3.0]
    assert len(_named(logs, "server.task_restarted")) == 3


def test_the_backoff_doubles_is_capped_and_never_overflows() -> None:
    policy = RestartPolicy(first=1.0, factor=2.0, cap=60.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 7, 8, 10_000)] == [1.0, 2.0, 4.0, 8.0, 60.0, 60.0, 60.0]


async def test_the_backoff_starts_over_after_a_task_ran_fine_for_a_while(tmp_path: Path) -> None:
    now = [0.0]
    crashes = 0

    async def crashes_four_times() -> None:
        nonlocal crashes
        crashes += 1
        if crashes == 3:
            now[0] += 61.0  # the third run lasts longer than healthy_after before it crashes
        if crashes <= 4:
            raise RuntimeError(f"crash {crashes}")

    sleeps = Sleeps()
    server = Server(
        ServerConfig(data_dir=tmp_path, provisioner_daemons=0),
        restart_policy=RestartPolicy(first=1.0, factor=2.0, cap=60.0, healthy_after=60.0),
        sleep=sleeps,
    )
    server._monotonic = lambda: now[0]
    with capture_logs():
        await server._supervise(BackgroundService("task", crashes_four_times))
    assert sleeps.delays == [1.0, 2.0, 1.0, 2.0]
    assert server.tasks["task"].state == "finished" and server.tasks["task"].restarts == 4


async def test_a_daemon_whose_loop_raises_comes_back_and_readyz_names_it_meanwhile(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = ProvisionerDaemon.run
    calls: Counter[str] = Counter()

    async def run_that_crashes_once(self: ProvisionerDaemon) -> None:
        calls[self.options.name] += 1
        if self.options.name == "embedded-1" and calls[self.options.name] == 1:
            raise RuntimeError("daemon exploded")
        await original(self)

    monkeypatch.setattr(ProvisionerDaemon, "run", run_that_crashes_once)
    sleeps = Sleeps()
    sleeps.hold = True  # the crashed daemon stays down until released
    running = await start_server(database_url, tmp_path / "server", server_options={"sleep": sleeps})
    try:
        server = running.server
        await wait_for(lambda: server.tasks["daemon-1"].state == "restarting", what="daemon-1 crashed")
        async with httpx.AsyncClient(base_url=running.url) as client:
            down = await client.get("/readyz")
            assert down.status_code == 503, down.text
            body = down.json()
            assert body["code"] == "not_ready"
            assert "daemon-1" in body["message"] and "daemon exploded" in body["message"]
            assert body["detail"]["checks"]["daemons"]["alive"] == 1
            assert body["detail"]["checks"]["daemons"]["configured"] == 2
            assert body["detail"]["checks"]["database"]["ok"] is True
            metrics = server.services.metrics if server.services else None
            assert metrics is not None
            assert metrics.registry.get_sample_value("prebuildd_daemons_alive") == 1
            assert metrics.registry.get_sample_value("prebuildd_daemons_configured") == 2

            sleeps.release.set()
            await wait_for(lambda: server.tasks["daemon-1"].running, what="daemon-1 restarted")
            assert calls["embedded-1"] == 2
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert metrics.registry.get_sample_value("prebuildd_daemons_alive") == 2
        # The restarted daemons still run jobs.
        async with running.client() as client:
            assert (await push(client, tmp_path, "echo", ECHO)).status_code == 201
            assert (await wait_imported(client, "echo", "v1"))["import_status"] == "succeeded"
            created = await client.post(f"{API}/workspaces", json={"name": "w", "template": "echo"})
            assert created.status_code == 201, created.text
            built = await wait_build(client, created.json()["id"], 1)
            assert built["status"] == "succeeded", built["error"]
    finally:
        await running.server.stop()


async def test_stop_stops_every_task_even_one_waiting_to_restart(database_url: str, tmp_path: Path) -> None:
    unretrieved: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unretrieved.append(context))

    async def always_crashes() -> None:
        raise RuntimeError("never works")

    sleeps = Sleeps()
    sleeps.hold = True  # the restart pause never ends by itself: only stop() can end it
    running = await start_server(
        database_url,
        tmp_path / "server",
        server_options={"sleep": sleeps},
        before_start=lambda server: server.add_background(BackgroundService("broken", always_crashes)),
    )
    server = running.server
    try:
        await wait_for(lambda: server.tasks["broken"].state == "restarting", what="the broken task crashed")
    finally:
        await asyncio.wait_for(server.stop(), timeout=60)
    tasks = [*server._daemon_tasks, *server._background_tasks]
    assert server._listener_task is not None
    tasks.append(server._listener_task)
    assert tasks and all(task.done() for task in tasks)
    assert {name: h.state for name, h in server.tasks.items() if h.state not in ("stopped", "finished")} == {}
    assert server.tasks["broken"].restarts == 0  # stopping ended the pause: no restart after stop
    gc.collect()
    loop.set_exception_handler(None)
    assert unretrieved == []
