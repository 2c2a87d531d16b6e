"""The browser tests' fixtures: a real server running the demo (its template and pools), and a headless chromium
with a fresh profile that may not reach beyond 127.0.0.1 (tests.support.browser)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.browser import Browsing, browsing, require_chromium
from tests.support.server import RunningServer, served


@pytest.fixture
async def demo_server(database_url: str, tmp_path: Path) -> AsyncIterator[RunningServer]:
    require_chromium()  # before starting a server for nothing
    async with served(database_url, tmp_path / "server", demo=True) as running:
        yield running


@pytest.fixture
async def browser(demo_server: RunningServer) -> AsyncIterator[Browsing]:
    async with browsing(demo_server.url) as session:
        yield session
