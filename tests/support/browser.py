"""A real browser for the dashboard's tests: Debian's chromium (``/usr/bin/chromium``, never one Playwright
downloads) driven through Playwright, headless, with a fresh profile per test.

Every request the browser makes is recorded; one that leaves 127.0.0.1 is aborted and fails the test when the
browser closes (the dashboard must work offline: no CDN, no font service, nothing). With
``PREBUILDD_SCREENSHOTS=docs/img`` set, :meth:`Browsing.screenshot` saves PNGs there for the documentation.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import BrowserContext, Page, Route, async_playwright
from playwright.async_api import Request as BrowserRequest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = "PREBUILDD_SCREENSHOTS"
LOCAL_HOSTS = {"127.0.0.1"}
# Schemes that are no network request.
LOCAL_SCHEMES = {"data", "blob", "about", "chrome", "chrome-error", "devtools"}


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in LOCAL_SCHEMES or parts.hostname in LOCAL_HOSTS


@dataclass
class Browsing:
    """One browser profile: its context, every URL it asked for, and the ones refused for leaving 127.0.0.1."""

    context: BrowserContext
    base_url: str
    requested: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    async def page(self) -> Page:
        page = await self.context.new_page()
        page.set_default_timeout(20_000)  # a deadline for every wait, not a sleep
        return page

    async def login(self, page: Page, token: str) -> None:
        """Sign in through the login form, as a person would, and land on the pools."""
        await page.goto(f"{self.base_url}/login")
        await page.get_by_label("API token").fill(token)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(f"{self.base_url}/pools")

    async def screenshot(self, page: Page, name: str) -> None:
        """A PNG of the page for docs/dashboard.md when ``PREBUILDD_SCREENSHOTS`` names a directory."""
        where = os.environ.get(SCREENSHOTS)
        if not where:
            return
        os.makedirs(where, exist_ok=True)
        await page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@asynccontextmanager
async def browsing(base_url: str) -> AsyncIterator[Browsing]:
    """A headless chromium with a fresh profile; fails the test if any request went beyond 127.0.0.1."""
    require_chromium()
    assert is_local(base_url), f"the dashboard under test must be on 127.0.0.1, not {base_url}"
    with tempfile.TemporaryDirectory(prefix="prebuildd-chromium-") as profile:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=FLAGS,
                viewport=DESKTOP,  # type: ignore[arg-type]
                service_workers="block",
            )
            session = Browsing(context, base_url)

            def seen(request: BrowserRequest) -> None:
                session.requested.append(request.url)

            async def guard(route: Route) -> None:
                if is_local(route.request.url):
                    await route.continue_()
                else:
                    session.refused.append(route.request.url)
                    await route.abort("blockedbyclient")

            context.on("request", seen)
            await context.route("**/*", guard)
            try:
                yield session
            finally:
                await context.close()
    outside = [url for url in session.requested if not is_local(url)] + session.refused
    assert not outside, f"the browser asked for something beyond 127.0.0.1: {sorted(set(outside))}"
