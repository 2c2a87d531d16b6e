"""The Workspaces page in a real browser: a member sees their own workspace, a template-admin everyone's, and a
running build's log grows on the page without a reload (only new lines, once each), then stops polling when the
build has finished."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import expect

from tests.support.api import API, push, user_with_token, wait_imported
from tests.support.browser import PHONE, Browsing
from tests.support.server import RunningServer
from tests.support.templates import BLOCKING_MANIFEST, EXEC_FILES, EXEC_MANIFEST, blocking_files


async def test_a_running_builds_log_appears_live_and_stops_with_the_build(
    demo_server: RunningServer, browser: Browsing, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    member = await user_with_token(demo_server, "mona")
    admin = await user_with_token(demo_server, "tess", "template-admin")
    async with demo_server.client() as owner:
        pushed = await push(
            owner, tmp_path, "slow", BLOCKING_MANIFEST, blocking_files(release), activate="true"
        )
        assert pushed.status_code == 201, pushed.text
        await wait_imported(owner, "slow", pushed.json()["version"])
    async with demo_server.client(member) as client:
        created = await client.post(f"{API}/workspaces", json={"name": "livews", "template": "slow"})
        assert created.status_code == 201, created.text

    page = await browser.page()
    await browser.login(page, member)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Workspaces").click()
    await page.get_by_role("link", name="livews").click()
    log = page.get_by_role("log", name="Build log")
    await expect(log).to_contain_text("started livews")
    await expect(page.locator("#build-status")).to_contain_text("running")
    assert "finished livews" not in await log.inner_text()
    await browser.screenshot(page, "workspace-log")

    release.touch()  # the script goes on: its last line must arrive without a reload
    await expect(log).to_contain_text("finished livews")
    await expect(page.locator("#build-status")).to_contain_text("succeeded")
    await expect(page.get_by_role("region", name="Recent builds").last).to_contain_text("succeeded")
    await expect(page.locator(".log-poller")).to_have_count(0)  # polling stopped with the build
    await expect(log.locator(".log-line", has_text="started livews")).to_have_count(1)
    await expect(log.locator(".log-line", has_text="finished livews")).to_have_count(1)
    assert member not in await page.content()

    # The member lists only their own workspace; the template-admin everyone's, with the owner named.
    await page.goto(f"{browser.base_url}/workspaces")
    rows = page.locator("table.data tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("livews")
    admin_page = await browser.context.new_page()
    await browser.login(admin_page, admin)
    await admin_page.goto(f"{browser.base_url}/workspaces")
    row = admin_page.locator("table.data tbody tr", has_text="livews")
    await expect(row).to_contain_text("mona")
    await expect(admin_page.get_by_role("columnheader", name="Owner")).to_be_visible()


async def test_another_users_workspace_is_not_found_for_a_member(
    demo_server: RunningServer, browser: Browsing, tmp_path: Path
) -> None:
    member = await user_with_token(demo_server, "mona")
    async with demo_server.client() as owner:
        pushed = await push(owner, tmp_path, "web", EXEC_MANIFEST, EXEC_FILES, activate="true")
        await wait_imported(owner, "web", pushed.json()["version"])
        created = await owner.post(
            f"{API}/workspaces", json={"name": "owners", "template": "web", "parameters": {"repo": "r"}}
        )
        assert created.status_code == 201, created.text
    page = await browser.page()
    await page.set_viewport_size(PHONE)
    await browser.login(page, member)
    answer = await page.goto(f"{browser.base_url}/workspaces/{created.json()['id']}")
    assert answer is not None and answer.status == 404
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
