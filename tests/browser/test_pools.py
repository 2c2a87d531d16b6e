"""The Pools page in a real browser on the demo server: its counts are those of `prebuilds status --json`, a claim
made through the CLI shows without a reload (the page polls), and the pause button is there for the site owner
and neither shown to nor accepted from a member."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import Page

from tests.support.api import user_with_token
from tests.support.browser import Browsing
from tests.support.cli import Cli
from tests.support.server import RunningServer
from tests.support.waiting import wait_for

COUNTS = ("desired", "running", "eligible", "starting", "failed")
DEMO_FULL = {"hello": 2, "docs": 1}


def cli_for(running: RunningServer, token: str, tmp_path: Path) -> Cli:
    return Cli(tmp_path / "cli", {"PREBUILDD_URL": running.url, "PREBUILDD_TOKEN": token})


async def demo_pools_full(running: RunningServer) -> None:
    async with running.client() as client:

        async def full() -> bool:
            answer = await client.get("/api/v1/prebuilds/status")
            return {p["preset"]: p["eligible"] for p in answer.json()["presets"]} == DEMO_FULL

        await wait_for(full, timeout=120, what="the demo pools to fill (hello: 2, docs: 1)")


async def page_counts(page: Page) -> dict[str, dict[str, int]]:
    rows: dict[str, dict[str, int]] = await page.eval_on_selector_all(
        "tr[data-preset]",
        """rows => Object.fromEntries(rows.map(r => [r.dataset.preset, Object.fromEntries(
             [...r.querySelectorAll('[data-count]')].map(c => [c.dataset.count, Number(c.textContent)]))]))""",
    )
    return rows


def status_counts(status: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {f"{p['template']}/{p['preset']}": {k: p[k] for k in COUNTS} for p in status["presets"]}


async def test_the_demo_pools_show_the_counts_of_the_cli_and_a_cli_claim_shows_live(
    demo_server: RunningServer, browser: Browsing, tmp_path: Path
) -> None:
    await demo_pools_full(demo_server)
    cli = cli_for(demo_server, demo_server.owner_token, tmp_path)
    status = (await cli.ok("prebuilds", "status", "--json")).json()

    page = await browser.page()
    await browser.login(page, demo_server.owner_token)
    shown = await page_counts(page)
    assert shown == status_counts(status)
    hello = page.locator('tr[data-preset="local-workspace/hello"]')
    assert "healthy" in await hello.locator(".status").inner_text()
    await page.locator("svg.chart").first.wait_for()  # the sparklines are there (drawn by the server)
    await browser.screenshot(page, "pools")

    claimed = await cli.ok(
        "workspaces", "create", "mine", "--template", "local-workspace", "--preset", "hello", "--json"
    )
    assert claimed.json()["claimed"] is True, claimed
    # No reload: the table is polled every 2 s; the claim counts in the hit rate for the day.
    await hello.locator('[data-claims-day="1"]').wait_for(timeout=30_000)
    assert "1 claim" in await hello.locator(".hit-rate").inner_text()


async def test_pause_is_for_the_site_owner_and_refused_to_a_member(
    demo_server: RunningServer, browser: Browsing, tmp_path: Path
) -> None:
    member_token = await user_with_token(demo_server, "mona", "member")
    member = await browser.page()
    await browser.login(member, member_token)
    await member.locator("tr[data-preset]").first.wait_for()
    assert await member.get_by_role("button", name="Pause reconciliation").count() == 0
    assert await member.get_by_role("button", name="Retry local-workspace/hello").count() == 0
    csrf = await member.locator('input[name="csrf_token"]').first.get_attribute("value")
    assert csrf
    refused = await member.request.post(
        f"{browser.base_url}/actions/pause",
        form={"csrf_token": csrf, "paused": "true"},
        headers={"Origin": browser.base_url},
        max_redirects=0,
    )
    assert refused.status == 403
    async with demo_server.client() as owner_api:
        assert (await owner_api.get("/api/v1/prebuilds/settings")).json()["reconciliation_paused"] is False
    await member.get_by_role("button", name="Log out").click()
    await member.wait_for_url(f"{browser.base_url}/login")

    owner = await browser.page()
    await browser.login(owner, demo_server.owner_token)
    await owner.get_by_role("button", name="Pause reconciliation").click()
    await owner.locator("#paused-banner").wait_for()
    async with demo_server.client() as owner_api:
        assert (await owner_api.get("/api/v1/prebuilds/settings")).json()["reconciliation_paused"] is True
        audit = (await owner_api.get("/api/v1/audit", params={"action": "prebuilds.pause"})).json()
    outcomes = sorted(e["outcome"] for e in audit["entries"])
    assert outcomes == ["denied", "ok"], audit  # the member's refused try and the owner's pause, as the API's
    await browser.screenshot(owner, "pools-paused")
    await owner.get_by_role("button", name="Resume reconciliation").click()
    await owner.get_by_role("button", name="Pause reconciliation").wait_for()
