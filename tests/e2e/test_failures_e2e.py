"""Failure handling end to end: a pool whose create script always fails is hard-limited after exactly 3 failed
prebuilds, says why in status and explain, notifies a webhook once, recovers after a fix and a retry, and its
evidence is cleaned up through the CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from prebuildd.server.process import OWNER_TOKEN_FILE
from tests.support.cli import Cli
from tests.support.server import start_server
from tests.support.templates import write_template
from tests.support.waiting import wait_for

FAILING = """
provisioner = "exec"
[exec]
create = "create.sh"
delete = "delete.sh"
[[presets]]
name = "busy"
[presets.prebuilds]
instances = 2
"""
BROKEN = {
    "create.sh": "#!/bin/sh\necho 'cloning'\necho 'fatal: repository not found' >&2\nexit 128\n",
    "delete.sh": "#!/bin/sh\necho removed\n",
}
FIXED = {**BROKEN, "create.sh": "#!/bin/sh\necho ready\n"}


class WebhookReceiver:
    """A local HTTP endpoint that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hooks/prebuilds"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        self.bodies.append(json.loads(await reader.readexactly(length)))
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_a_failing_pool_is_hard_limited_explained_notified_and_recovers(
    database_url: str, tmp_path: Path
) -> None:
    receiver = WebhookReceiver()
    hook = await receiver.start()
    running = await start_server(
        database_url, tmp_path / "server", reconcile_interval=0.5, backoff_interval=0.2, notify_webhook=hook
    )
    try:
        cli = Cli(tmp_path / "cli")
        await cli.ok("login", running.url, "--token-file", str(running.data_dir / OWNER_TOKEN_FILE))
        await cli.ok(
            "templates", "push", "flaky", str(write_template(tmp_path / "v1", FAILING, BROKEN)), "--activate"
        )
        headers = {"Authorization": f"Bearer {running.owner_token}"}
        async with httpx.AsyncClient(base_url=running.url, headers=headers, timeout=30) as api:

            async def busy() -> dict[str, Any]:
                presets = (await api.get("/api/v1/prebuilds/status")).json()["presets"]
                return next((p for p in presets if p["preset"] == "busy" and p["active"]), {})

            async def hard_limited() -> bool:
                return (await busy()).get("status") == "hard_limited"

            await wait_for(hard_limited, timeout=60, what="the preset to be hard-limited")
            status = await busy()
            assert status["failed"] == 3, status  # exactly 3 failed prebuilds, then no more creates
            assert status["hard_limit_reason"].startswith("last 3 creations failed:")
            assert "repository not found" in status["hard_limit_reason"]
            assert status["running"] == 0 and status["starting"] == 0

            await wait_for(lambda: _has(receiver.bodies), what="the webhook")
            [body] = receiver.bodies
            assert body["event"] == "prebuilds.hard_limited"
            assert [(p["template"], p["preset"], p["reason"]) for p in body["presets"]] == [
                ("flaky", "busy", "build")
            ]

            shown = (await cli.ok("prebuilds", "status")).out
            assert "limited" in shown and "flaky/busy:\n  last 3 creations failed" in shown
            assert "prebuildd prebuilds explain flaky busy" in shown
            explained = await cli.ok("prebuilds", "explain", "flaky", "busy")
            assert "hard-limited" in explained.out and "repository not found" in explained.out
            for _ in range(4):  # several more cycles: still exactly 3 failures, and one notification
                await running.server.reconciler.run_cycle()  # type: ignore[union-attr]
            assert (await busy())["failed"] == 3 and len(receiver.bodies) == 1

            # Fix the script in place is impossible (versions are immutable): push a fixed version. A retry of
            # the old one would keep failing; the new version's preset starts clean.
            listed = await cli.ok("prebuilds", "cleanup", "--dry-run")
            assert listed.out.count("flaky") == 3 and "would delete 3 failed prebuilds" in listed.err
            await cli.ok(
                "templates",
                "push",
                "flaky",
                str(write_template(tmp_path / "v2", FAILING, FIXED)),
                "--activate",
            )

            async def healthy_pool() -> bool:
                current = await busy()
                return current.get("status") == "healthy" and current.get("eligible") == 2

            await wait_for(healthy_pool, timeout=60, what="the fixed version's pool")
            removed = await cli.ok("prebuilds", "cleanup")
            assert "deleting 3 failed prebuilds" in removed.err

            async def evidence_gone() -> bool:
                return "No failed prebuilds." in (await cli.ok("prebuilds", "cleanup", "--dry-run")).err

            await wait_for(evidence_gone, timeout=60, what="the failed prebuilds to be deleted")
    finally:
        await running.server.stop()
        await receiver.stop()


async def _has(items: list[Any]) -> bool:
    return bool(items)
