"""The Queue page in a real browser, on a server with no provisioner daemon: a template-admin sees the pending
import with why it waits ("no provisioner for kind exec") and the page follows the queue without a reload; a
member finds no Queue link and is refused the page. It fits a 390 px wide screen."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.support.api import push, user_with_token
from tests.support.browser import PHONE, Browsing, browsing, require_chromium
from tests.support.server import RunningServer, served
from tests.support.templates import EXEC_FILES, EXEC_MANIFEST


@pytest.fixture
async def idle_server(database_url: str, tmp_path: Path) -> AsyncIterator[RunningServer]:
    """A server without provisioner daemons: every job stays pending, and says why."""
    require_chromium()
    async with served(database_url, tmp_path / "server", provisioner_daemons=0) as running:
        yield running


@pytest.fixture
async def idle_browser(idle_server: RunningServer) -> AsyncIterator[Browsing]:
    async with browsing(idle_server.url) as session:
        yield session


async def test_the_queue_shows_a_pending_jobs_waiting_reason_live(
    idle_server: RunningServer, idle_browser: Browsing, tmp_path: Path
) -> None:
    admin = await user_with_token(idle_server, "tess", "template-admin")
    async with idle_server.client() as owner:
        assert (await push(owner, tmp_path, "web", EXEC_MANIFEST, EXEC_FILES)).status_code == 201

    page = await idle_browser.page()
    await idle_browser.login(page, admin)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Queue").click()
    pending = page.locator("#pending-jobs tbody tr")
    await expect(pending).to_have_count(1)
    await expect(pending.first).to_contain_text("template_version_import")
    await expect(pending.first).to_contain_text("no provisioner for kind exec")
    await expect(page.locator("#queue-pending")).to_contain_text("1 job, 1 that no daemon can take")
    await expect(page.locator("#queue-daemons")).to_contain_text("0 of 0 online")
    await expect(page.locator("#queue-oldest")).to_contain_text("waiting")
    await idle_browser.screenshot(page, "queue-waiting")

    async with idle_server.client() as owner:  # a second job shows up without a reload
        assert (await push(owner, tmp_path, "api", EXEC_MANIFEST, EXEC_FILES)).status_code == 201
    await expect(pending).to_have_count(2)
    await expect(page.locator("#queue-pending")).to_contain_text("2 jobs")

    await page.set_viewport_size(PHONE)
    await expect(pending).to_have_count(2)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide at {PHONE['width']} px"


async def test_a_member_has_no_queue_link_and_is_refused_the_page(
    idle_server: RunningServer, idle_browser: Browsing
) -> None:
    member = await user_with_token(idle_server, "mona")
    page = await idle_browser.page()
    await idle_browser.login(page, member)
    nav = page.get_by_role("navigation", name="Main")
    await expect(nav.get_by_role("link", name="Workspaces")).to_be_visible()
    await expect(nav.get_by_role("link", name="Queue")).to_have_count(0)
    await expect(nav.get_by_role("link", name="Audit")).to_have_count(0)
    answer = await page.goto(f"{idle_browser.base_url}/queue")
    assert answer is not None and answer.status == 403
    await expect(page.get_by_role("alert")).to_contain_text("jobs.read needs the template-admin role")
    assert "no provisioner" not in await page.content()
