"""Database outages against a real server: while PostgreSQL is down the API and /readyz answer 503
``database_unavailable`` quickly, each component logs the outage once and its end once, and once the database is
back everything works again without a restart; a killed embedded PostgreSQL is restarted by the server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from structlog.testing import capture_logs

from prebuildd.server.embedded_pg import EmbeddedPostgres
from tests.support.api import API, push, wait_build, wait_imported
from tests.support.processes import process_gone, processes_in
from tests.support.server import RunningServer, start_server
from tests.support.waiting import wait_for

ECHO = 'provisioner = "echo"\n'
COMPONENTS = ("db-pool", "listener", "stale-job-reaper")
OLD_POOL_TIMEOUT = 30.0
"""Before: a request waited this long for a connection. Answers must come well before it."""


def _named(logs: list[dict[str, Any]], event: str, **match: object) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == event and all(e.get(k) == v for k, v in match.items())]


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def _provision(running: RunningServer, name: str) -> None:
    async with running.client() as client:
        created = await client.post(f"{API}/workspaces", json={"name": name, "template": "echo"})
        assert created.status_code == 201, created.text
        built = await wait_build(client, created.json()["id"], 1)
        assert built["status"] == "succeeded", built["error"]


async def _push_echo(running: RunningServer, tmp: Path) -> None:
    async with running.client() as client:
        assert (await push(client, tmp, "echo", ECHO)).status_code == 201
        assert (await wait_imported(client, "echo", "v1"))["import_status"] == "succeeded"


async def test_a_database_outage_fails_fast_logs_once_per_component_and_heals_by_itself(
    private_pg: EmbeddedPostgres, tmp_path: Path
) -> None:
    running = await start_server(
        private_pg.url(),
        tmp_path / "server",
        db_timeout=2.0,
        stale_job_timeout=1.0,
        reconcile_interval=3600.0,
    )
    services = running.server.services
    assert services is not None
    try:
        await _push_echo(running, tmp_path)
        with capture_logs() as logs:
            await asyncio.to_thread(private_pg.stop)
            async with running.client() as client:
                for _ in range(3):  # the first request, and those after the pool knows
                    started = time.monotonic()
                    refused = await client.get(f"{API}/workspaces")
                    assert time.monotonic() - started < OLD_POOL_TIMEOUT / 3
                    assert refused.status_code == 503, refused.text
                    assert refused.json()["code"] == "database_unavailable"
                started = time.monotonic()
                unready = await client.get("/readyz")
                assert time.monotonic() - started < OLD_POOL_TIMEOUT / 3
                assert unready.status_code == 503, unready.text
                assert unready.json()["code"] == "database_unavailable"
                assert unready.json()["detail"]["checks"]["database"]["ok"] is False
                assert "database" in unready.json()["message"]

                # A multi-second outage: the listener and the reaper retry several times meanwhile.
                await wait_for(
                    lambda: (
                        services.listener.fault.failures >= 4
                        and all(_named(logs, "component.unavailable", component=c) for c in COMPONENTS)
                        and all(d.fault.down for d in running.server.daemons)
                    ),
                    timeout=60,
                    what="several failed attempts of every component",
                )
                metrics = services.metrics.registry
                assert metrics.get_sample_value(
                    "prebuildd_component_down", {"component": "listener", "dependency": "database"}
                )
                daemon_series = [
                    {"component": f"daemon-{i}", "dependency": "database"}
                    for i in range(len(running.server.daemons))
                ]
                assert [metrics.get_sample_value("prebuildd_component_down", s) for s in daemon_series] == [
                    1.0
                ] * len(daemon_series)  # one series per daemon: the first one back does not clear the others

                await asyncio.to_thread(private_pg.start)
                await wait_for(lambda: _ready(client), timeout=60, what="/readyz back to 200")
                await wait_for(
                    lambda: (
                        all(_named(logs, "component.recovered", component=c) for c in COMPONENTS)
                        and not any(d.fault.down for d in running.server.daemons)
                    ),
                    timeout=30,
                    what="every component recovered",
                )
            await _provision(running, "after-outage")
        for component in COMPONENTS:
            assert len(_named(logs, "component.unavailable", component=component)) == 1, component
            assert len(_named(logs, "component.recovered", component=component)) == 1, component
        for daemon in running.server.daemons:  # and one of each per embedded daemon
            ids = {"component": "daemon", "worker_id": daemon.worker_id}
            assert len(_named(logs, "component.unavailable", **ids)) == 1, daemon.worker_id
            assert len(_named(logs, "component.recovered", **ids)) == 1, daemon.worker_id
        assert [metrics.get_sample_value("prebuildd_component_down", s) for s in daemon_series] == [
            0.0
        ] * len(daemon_series)
        assert _named(logs, "reconcile.kicked", reason="database reconnected")
        assert not _named(logs, "server.task_crashed")
        assert all(h.running for name, h in running.server.tasks.items() if name.startswith("daemon-"))
    finally:
        await running.server.stop()


async def test_readyz_answers_quickly_when_the_database_hangs(
    private_pg: EmbeddedPostgres, tmp_path: Path
) -> None:
    running = await start_server(private_pg.url(), tmp_path / "server", provisioner_daemons=0)
    frozen = processes_in(private_pg.pgdata)
    assert frozen, "no PostgreSQL process found"
    try:
        async with httpx.AsyncClient(base_url=running.url) as client:
            assert await _ready(client)
            for pid in frozen:  # a frozen (SIGSTOP) or black-holed server: connections open, nothing answers
                os.kill(pid, signal.SIGSTOP)
            started = time.monotonic()
            hung = await client.get("/readyz")
            assert time.monotonic() - started < OLD_POOL_TIMEOUT / 3
            assert hung.status_code == 503, hung.text
            assert hung.json()["code"] == "database_unavailable"
            assert "no answer within" in hung.json()["detail"]["checks"]["database"]["reason"]
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
            await wait_for(lambda: _ready(client), timeout=60, what="/readyz back to 200")
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        await running.server.stop()


async def test_a_killed_embedded_postgres_is_restarted_and_provisioning_resumes(
    pg_dir: Path, tmp_path: Path
) -> None:
    with capture_logs() as logs:
        running = await start_server(None, pg_dir / "server", reconcile_interval=3600.0)
        server = running.server
        try:
            embedded = server.embedded
            assert embedded is not None
            await _push_echo(running, tmp_path)
            pid = embedded.postmaster_pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await wait_for(lambda: process_gone(pid), what="the postmaster gone")
            await wait_for(
                lambda: bool(_named(logs, "embedded_pg.restarted")), timeout=90, what="the restart"
            )
            assert _named(logs, "embedded_pg.died", pid=pid)
            assert embedded.alive() and embedded.postmaster_pid() != pid
            async with httpx.AsyncClient(base_url=running.url) as client:
                await wait_for(lambda: _ready(client), timeout=60, what="/readyz back to 200")
            await _provision(running, "after-restart")
            assert all(server.tasks[f"daemon-{i}"].running for i in range(server.config.provisioner_daemons))
            assert not _named(logs, "server.task_crashed")
        finally:
            await server.stop()
    assert not embedded.alive()  # stop() stops the server it restarted
