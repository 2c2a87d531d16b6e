"""A failing pool's Preset page in a real browser: a template admin sees the error and the failed prebuild's
build log inline; a member sees that prebuilds fail, without the error text or the log. The page also draws its
charts and the week schedule, and a template admin changes the pool's instances through its settings form."""

from __future__ import annotations

from pathlib import Path

from tests.support.api import push, user_with_token
from tests.support.browser import Browsing
from tests.support.server import RunningServer
from tests.support.waiting import wait_for

ERROR = "boot script: exit 7 (disk full on /var/lib/ws)"
LOG_LINE = "pulling image base:2026"
BROKEN = f"""
provisioner = "echo"
[echo.start]
result = "failure"
error = "{ERROR}"
logs = ["{LOG_LINE}", "writing layers"]

[[presets]]
name = "broken"
[presets.prebuilds]
instances = 1
schedule = [{{ cron = "* 9-17 * * 1-5", instances = 2 }}]
"""


async def failing_pool(running: RunningServer, tmp: Path) -> None:
    async with running.client() as owner:
        pushed = await push(owner, tmp, "broken-app", BROKEN)
        assert pushed.status_code in (200, 201, 202), pushed.text

        async def failed() -> bool:
            status = (await owner.get("/api/v1/prebuilds/status")).json()
            pool = [p for p in status["presets"] if p["template"] == "broken-app"]
            return bool(pool) and pool[0]["failed"] >= 1

        await wait_for(failed, timeout=60, what="a failed prebuild of broken-app/broken")


async def test_a_failing_pool_shows_its_error_and_log_to_a_template_admin_not_to_a_member(
    demo_server: RunningServer, browser: Browsing, tmp_path: Path
) -> None:
    await failing_pool(demo_server, tmp_path)
    admin_token = await user_with_token(demo_server, "tess", "template-admin")
    member_token = await user_with_token(demo_server, "mona", "member")
    url = f"{browser.base_url}/orgs/default/pools/broken-app/broken"

    admin = await browser.page()
    await browser.login(admin, admin_token)
    await admin.goto(url)
    await admin.locator(".failed-prebuild").first.wait_for()
    assert ERROR in await admin.locator(".failed-error").first.inner_text()
    assert LOG_LINE in await admin.locator(".failed-log").first.inner_text()
    week = admin.locator("svg.week-schedule")
    assert "Mon 09:00–10:00 2" in (await week.get_attribute("aria-label") or "")  # the schedule, in words
    assert await admin.locator("#timeline + ol li").count() >= 1  # the reconciler's decisions, with reasons
    await browser.screenshot(admin, "preset-template-admin")

    await admin.get_by_label("Instances", exact=True).fill("3")
    await admin.get_by_role("button", name="Save pool settings").click()
    await admin.wait_for_url(url)
    async with demo_server.client() as owner:
        audit = (await owner.get("/api/v1/audit", params={"action": "preset.set"})).json()
    assert [e["outcome"] for e in audit["entries"]] == ["ok"], audit
    assert "3" in await admin.locator("#settings + dl dd").first.inner_text()

    member = await browser.page()
    await member.context.clear_cookies()
    await browser.login(member, member_token)
    await member.goto(url)
    await member.locator(".failed-prebuild").first.wait_for()
    text = await member.locator("main").inner_text()
    assert "failed" in text
    assert ERROR not in text and "disk full" not in text and LOG_LINE not in text
    assert await member.locator(".failed-log").count() == 0
    assert await member.get_by_role("button", name="Save pool settings").count() == 0
    assert await member.get_by_role("button", name="Retry").count() == 0
    await browser.screenshot(member, "preset-member")
    html = await member.content()
    assert "disk full" not in html  # nor hidden in the markup
