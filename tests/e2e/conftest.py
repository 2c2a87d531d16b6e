"""The e2e fixtures: a real server (tests.support.server) started and stopped around a test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.server import RunningServer, start_server


@pytest.fixture
async def running_server(database_url: str, tmp_path: Path) -> AsyncIterator[RunningServer]:
    running = await start_server(database_url, tmp_path / "server")
    try:
        yield running
    finally:
        await running.server.stop()


@pytest.fixture
async def idle_server(database_url: str, tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A server without provisioner daemons: every job stays pending (or waits for a standalone daemon)."""
    running = await start_server(database_url, tmp_path / "server", provisioner_daemons=0)
    try:
        yield running
    finally:
        await running.server.stop()
