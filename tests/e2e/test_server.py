"""The server process: health, readiness, first start, restart."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx

from tests.support.server import RunningServer, start_server


async def test_health_and_readiness(running_server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=running_server.url) as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "ready"
        assert {name: check["ok"] for name, check in ready["checks"].items()} == {
            "database": True,
            "daemons": True,
            "reconciler": True,
        }
        schema = (await client.get("/openapi.json")).json()
        assert schema["info"]["title"] == "prebuildd"


async def test_first_start_writes_an_owner_token_readable_only_by_the_operator(
    database_url: str, tmp_path: Path
) -> None:
    running = await start_server(database_url, tmp_path / "a")
    token_file = tmp_path / "a" / "owner-token"
    try:
        mode = stat.S_IMODE(os.stat(token_file).st_mode)
        assert mode == 0o600
        assert running.owner_token.startswith("pbt_")
    finally:
        await running.server.stop()
    # A second start on the same database creates no second owner and writes no new secret.
    again = await start_server(database_url, tmp_path / "b")
    try:
        assert not (tmp_path / "b" / "owner-token").exists()
    finally:
        await again.server.stop()
