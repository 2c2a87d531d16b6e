"""A real server in the test's event loop, on real HTTP, on a cloned test database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from prebuildd.runtime.config import ServerConfig
from prebuildd.server.process import OWNER_TOKEN_FILE, Server


@dataclass
class RunningServer:
    server: Server
    url: str
    owner_token: str
    data_dir: Path

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token or self.owner_token}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


async def start_server(
    database_url: str | None,
    data_dir: Path,
    *,
    server_options: dict[str, Any] | None = None,
    before_start: Callable[[Server], None] | None = None,
    **overrides: object,
) -> RunningServer:
    """A started server; ``server_options`` go to ``Server`` (a clock, the supervisor's sleep), ``before_start``
    sees it before it starts (to add a background service), a ``database_url`` of None runs the embedded one."""
    settings: dict[str, object] = {
        "postgres_url": database_url,
        "data_dir": data_dir,
        "http_address": "127.0.0.1:0",
        "provisioner_daemons": 2,
        "heartbeat_interval": 0.2,
        "job_poll_interval": 0.5,
        "shutdown_grace": 5.0,
        "db_pool_size": 10,
    }
    settings.update(overrides)
    server = Server(ServerConfig(**settings), **(server_options or {}))  # type: ignore[arg-type]
    if before_start is not None:
        before_start(server)
    await server.start()
    token_file = data_dir / OWNER_TOKEN_FILE
    token = token_file.read_text().strip() if token_file.exists() else ""
    return RunningServer(server, server.url, token, data_dir)


@asynccontextmanager
async def served(database_url: str | None, data_dir: Path, **options: Any) -> AsyncIterator[RunningServer]:
    """``start_server``, stopped again when the block ends (the shape of a server fixture)."""
    running = await start_server(database_url, data_dir, **options)
    try:
        yield running
    finally:
        await running.server.stop()
