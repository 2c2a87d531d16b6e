"""The e2e fixtures: a real server (tests.support.server) started and stopped around a test."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from prebuildd.server.embedded_pg import EmbeddedPostgres
from tests.support.server import RunningServer, served


@pytest.fixture
async def running_server(database_url: str, tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with served(database_url, tmp_path / "server") as running:
        yield running


@pytest.fixture
async def idle_server(database_url: str, tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A server without provisioner daemons: every job stays pending (or waits for a standalone daemon)."""
    async with served(database_url, tmp_path / "server", provisioner_daemons=0) as running:
        yield running


@pytest.fixture
def pg_dir() -> Iterator[Path]:
    """A directory for an embedded PostgreSQL outside pytest's tmp tree: as root the server runs as another user,
    who must traverse it, and pytest resets its tree's mode to 0700 whenever another run starts."""
    path = Path(tempfile.mkdtemp(prefix="prebuildd-private-pg-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def private_pg(pg_dir: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A PostgreSQL of this test alone, which it may stop and start (the session's is shared)."""
    pg = EmbeddedPostgres(pg_dir / "pg", settings={"fsync": "off", "synchronous_commit": "off"})
    await asyncio.to_thread(pg.start)
    try:
        yield pg
    finally:
        await asyncio.to_thread(pg.stop)
