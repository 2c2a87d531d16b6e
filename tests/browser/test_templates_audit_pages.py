"""The Templates and Audit pages in a real browser: a template-admin reads a failed import's error and its log
(reached with the keyboard), a member only that it failed; an owner reads and filters the audit log, which a
template-admin is refused. Nothing on these pages is a token."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import expect

from tests.support.api import push, user_with_token, wait_imported
from tests.support.browser import PHONE, Browsing
from tests.support.dashboard import FAILING_IMPORT, WARNING
from tests.support.server import RunningServer


async def test_import_errors_and_logs_are_shown_to_template_admins_only(
    demo_server: RunningServer, browser: Browsing, tmp_path: Path
) -> None:
    member = await user_with_token(demo_server, "mona")
    admin = await user_with_token(demo_server, "tess", "template-admin")
    async with demo_server.client() as owner:
        broken = await push(owner, tmp_path, "broken", FAILING_IMPORT)
        warned = await push(owner, tmp_path, "warned", WARNING)
        assert broken.status_code == warned.status_code == 201
        await wait_imported(owner, "broken", broken.json()["version"])
        await wait_imported(owner, "warned", warned.json()["version"])

    page = await browser.page()
    await browser.login(page, member)
    await page.goto(f"{browser.base_url}/templates")
    section = page.get_by_role("region", name="Versions of broken")
    await expect(section).to_contain_text("import failed (the error is shown to template-admins)")
    await expect(section).not_to_contain_text("exit 3")
    await expect(page.get_by_role("link", name="import log of broken v1")).to_have_count(0)
    await expect(page.get_by_role("region", name="Versions of warned")).to_contain_text("repo")
    answer = await page.goto(f"{browser.base_url}/templates/broken/versions/v1/log")
    assert answer is not None and answer.status == 403

    admin_page = await browser.context.new_page()  # the same profile: this sign-in replaces the member's
    await browser.login(admin_page, admin)
    await admin_page.goto(f"{browser.base_url}/templates")
    await expect(admin_page.get_by_role("region", name="Versions of broken")).to_contain_text("exit 3")
    await browser.screenshot(admin_page, "templates-admin")
    link = admin_page.get_by_role("link", name="import log of broken v1")
    await link.focus()
    await admin_page.keyboard.press("Enter")
    await admin_page.wait_for_url(f"{browser.base_url}/templates/broken/versions/v1/log")
    log = admin_page.get_by_role("log", name="Import log")
    await expect(log).to_contain_text("checking the manifest")
    await expect(admin_page.locator(".error")).to_contain_text("import script: exit 3")


async def test_owners_read_and_filter_the_audit_log_and_others_are_refused(
    demo_server: RunningServer, browser: Browsing, tmp_path: Path
) -> None:
    admin = await user_with_token(
        demo_server, "tess", "template-admin"
    )  # writes user.create and token.create
    async with demo_server.client(admin) as client:
        assert (await push(client, tmp_path, "mine", 'provisioner = "echo"\n')).status_code == 201

    page = await browser.page()
    await page.set_viewport_size(PHONE)
    await browser.login(page, demo_server.owner_token)
    await page.goto(f"{browser.base_url}/audit")
    entries = page.locator("#audit-entries tbody tr")
    push_row = entries.filter(has_text="template.push")
    await expect(push_row).to_contain_text("tess")
    await expect(push_row).to_contain_text("mine")
    await expect(push_row).to_contain_text("ok")
    created = entries.filter(has_text="user.create").filter(has_text="tess")
    await expect(created).to_contain_text("role=template-admin")  # the object's details
    await expect(created).to_contain_text("admin")  # who did it
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide at {PHONE['width']} px"
    await browser.screenshot(page, "audit-phone")

    await page.get_by_label("Action").fill("template.")
    await page.get_by_label("Action").press("Enter")  # the filter form works from the keyboard
    await page.wait_for_url("**/audit?**action=template.**")
    await expect(entries).to_have_count(await entries.filter(has_text="template.").count())
    await expect(entries.filter(has_text="user.create")).to_have_count(0)
    html = await page.content()
    assert demo_server.owner_token not in html and "pbt_" not in html

    refused = await browser.context.new_page()
    await browser.context.clear_cookies()
    await browser.login(refused, admin)
    await expect(
        refused.get_by_role("navigation", name="Main").get_by_role("link", name="Audit")
    ).to_have_count(0)
    answer = await refused.goto(f"{browser.base_url}/audit")
    assert answer is not None and answer.status == 403
