"""`--log-format json` as a log shipper reads it: the real server as a subprocess, through a port clash, a database
outage and a failing build, with every line of stdout and stderr one JSON object with ``event``, ``level`` and
``timestamp`` (uvicorn, asyncio, psycopg and warnings included; tracebacks in ``exception``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from prebuildd.server.embedded_pg import EmbeddedPostgres
from prebuildd.server.process import OWNER_TOKEN_FILE
from tests.support.api import API, push, wait_build, wait_imported
from tests.support.waiting import wait_for

TIMEOUT = 90.0
FAILING = """
provisioner = "echo"
[echo.start]
result = "failure"
error = "scripted failure for the log test"
"""

pytestmark = pytest.mark.timeout(240)


@dataclass
class Process:
    """A `prebuildd server` subprocess and every line it wrote, by stream."""

    process: asyncio.subprocess.Process
    lines: dict[str, list[str]] = field(default_factory=lambda: {"stdout": [], "stderr": []})
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    def events(self) -> list[dict[str, Any]]:
        return [
            json.loads(line) for line in self.lines["stderr"] + self.lines["stdout"] if line.startswith("{")
        ]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]

    async def finish(self, *, stop: bool = True) -> int:
        """Its exit code: stopped with SIGTERM, or (``stop`` false) once it exits by itself."""
        if stop and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), TIMEOUT)
        finally:
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        await asyncio.gather(*self.readers)
        return code


async def _start(data_dir: Path, *args: str) -> Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREBUILDD_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "prebuildd", "server", "--data-dir", str(data_dir), "--log-format", "json", *args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    running = Process(process)

    async def read(name: str, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            running.lines[name].append(line.decode(errors="replace"))

    assert process.stdout is not None and process.stderr is not None
    running.readers = [
        asyncio.create_task(read("stdout", process.stdout)),
        asyncio.create_task(read("stderr", process.stderr)),
    ]
    return running


def _assert_every_line_is_json(process: Process, what: str) -> list[dict[str, Any]]:
    events = []
    for stream, lines in process.lines.items():
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"{what}: a {stream} line is not JSON: {line!r}")
            assert isinstance(event, dict), (what, stream, line)
            missing = {"event", "level", "timestamp"} - set(event)
            assert not missing, f"{what}: a {stream} line lacks {missing}: {line!r}"
            assert "Traceback" not in str(event["event"]), (what, line)
            events.append(event)
    return events


async def test_every_line_is_json_through_a_port_clash_an_outage_and_a_failing_build(
    private_pg: EmbeddedPostgres, tmp_path: Path
) -> None:
    url = private_pg.url()
    server = await _start(
        tmp_path / "a",
        *("--postgres-url", url, "--http-address", "127.0.0.1:0", "--provisioner-daemons", "1"),
        *("--access-log", "--db-timeout", "1s", "--stale-job-timeout", "3s", "--heartbeat-interval", "1s"),
    )
    clash: Process | None = None
    try:
        await wait_for(lambda: server.named("server.listening"), timeout=TIMEOUT, what="server.listening")
        base = server.named("server.listening")[0]["url"]
        await wait_for((tmp_path / "a" / OWNER_TOKEN_FILE).exists, what="the owner token")
        token = (tmp_path / "a" / OWNER_TOKEN_FILE).read_text().strip()

        # A port clash: a second server on the first one's port.
        port = base.rsplit(":", 1)[1]
        clash = await _start(
            tmp_path / "b",
            "--postgres-url",
            url,
            "--http-address",
            f"127.0.0.1:{port}",
            "--provisioner-daemons",
            "0",
        )
        assert await clash.finish(stop=False) == 1
        clash_events = _assert_every_line_is_json(clash, "the port clash")
        failed = [e for e in clash_events if e["event"] == "server.start_failed"]
        assert [e["reason"] for e in failed] == ["port_in_use"], clash_events

        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client:
            # A failing build.
            assert (await push(client, tmp_path, "failing", FAILING)).status_code == 201
            assert (await wait_imported(client, "failing", "v1"))["import_status"] == "succeeded"
            created = await client.post(f"{API}/workspaces", json={"name": "broken", "template": "failing"})
            assert created.status_code == 201, created.text
            built = await wait_build(client, created.json()["id"], 1)
            assert built["status"] == "failed" and "scripted failure" in built["error"], built

            # A database outage, long enough for every component and the pool to notice, then the way back.
            await asyncio.to_thread(private_pg.stop)
            assert (await client.get(f"{API}/workspaces")).status_code == 503
            await wait_for(
                lambda: (
                    {"listener", "stale-job-reaper"}
                    <= {e.get("component") for e in server.named("component.unavailable")}
                ),
                timeout=60,
                what="the components to log the outage",
            )
            await asyncio.to_thread(private_pg.start, same_port=True)

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await wait_for(ready, timeout=60, what="/readyz after the outage")
            await wait_for(
                lambda: server.named("component.recovered"), timeout=60, what="component.recovered"
            )
        assert await server.finish() == 0
    finally:
        if clash is not None:
            await clash.finish()
        await server.finish()

    events = _assert_every_line_is_json(server, "the server")
    names = [e["event"] for e in events]
    assert "server.stopped" in names
    assert server.lines["stdout"] == [] or all(line.startswith("{") for line in server.lines["stdout"])
    # The access log: HTTP requests as structured lines, not uvicorn's text.
    requests = [e for e in events if e["event"] == "http.request"]
    assert any(e["path"] == f"{API}/workspaces" and e["status"] == 503 for e in requests), requests
    assert all(e["logger"] == "uvicorn.access" for e in requests)
    # Lines from other libraries are there, as JSON, naming their logger.
    libraries = {e["logger"] for e in events if "logger" in e}
    assert "uvicorn.access" in libraries
    # Any traceback is a field of its line, never lines of its own.
    for event in events:
        if "exception" in event:
            assert "Traceback" in event["exception"] or "Error" in event["exception"], event
