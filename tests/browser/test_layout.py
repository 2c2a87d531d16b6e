"""The dashboard's layout in a real browser: every page fits 1280x800 and a 390 px wide phone without scrolling
sideways (wide tables scroll inside their own region), the keyboard reaches everything from a skip link with a
visible focus, and /docs (Swagger UI, vendored) renders with nothing fetched beyond 127.0.0.1."""

from __future__ import annotations

from playwright.async_api import Page

from tests.support.browser import DESKTOP, PHONE, Browsing
from tests.support.server import RunningServer

PAGES = (
    "/pools",
    "/orgs/default/pools/local-workspace/hello",
    "/workspaces",
    "/queue",
    "/templates",
    "/audit",
)


async def overflow(page: Page) -> int:
    """How far the page is wider than the window (0: no sideways scrolling)."""
    extra: int = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return extra


async def test_every_page_fits_a_desktop_and_a_phone(demo_server: RunningServer, browser: Browsing) -> None:
    page = await browser.page()
    await browser.login(page, demo_server.owner_token)
    for size, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
        await page.set_viewport_size(size)  # type: ignore[arg-type]
        for path in PAGES:
            answer = await page.goto(f"{browser.base_url}{path}")
            assert answer is not None and answer.status == 200, (path, answer and answer.status)
            await page.locator("main h1").wait_for()
            assert await overflow(page) <= 0, f"{path} scrolls sideways at {size['width']} px"
            if name == "desktop" and path.count("/") == 1 and path != "/pools":
                await browser.screenshot(page, path.strip("/"))  # the pages docs/dashboard.md shows
        if name == "phone":
            await page.goto(f"{browser.base_url}/pools")
            await page.locator("tr[data-preset]").first.wait_for()
            await browser.screenshot(page, "pools-phone")
    await page.goto(f"{browser.base_url}/login")
    assert await overflow(page) <= 0


async def test_the_keyboard_starts_at_a_skip_link_and_focus_is_visible(
    demo_server: RunningServer, browser: Browsing
) -> None:
    page = await browser.page()
    await browser.login(page, demo_server.owner_token)
    await page.goto(f"{browser.base_url}/pools")
    await page.keyboard.press("Tab")
    focused = await page.evaluate("document.activeElement.textContent")
    assert focused == "Skip to the content"
    box = await page.locator(".skip-link").bounding_box()
    assert box is not None and box["x"] >= 0 and box["y"] >= 0  # on screen once focused
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"
    # Every control is a real link or button: tabbing from the top reaches the navigation and the logout.
    await page.goto(f"{browser.base_url}/pools")
    reached = []
    for _ in range(15):
        await page.keyboard.press("Tab")
        reached.append(await page.evaluate("document.activeElement.textContent.trim()"))
    for control in ("Pools", "Queue", "Workspaces", "Templates", "Audit", "Log out"):
        assert control in reached, (control, reached)
    labels = await page.eval_on_selector_all(
        "[onclick], div[tabindex]:not([role]), span[tabindex]", "els => els.map(e => e.outerHTML)"
    )
    assert labels == []  # no clickable div pretending to be a button


async def test_the_api_reference_works_offline(demo_server: RunningServer, browser: Browsing) -> None:
    page = await browser.page()
    await page.goto(f"{browser.base_url}/docs")
    await page.locator(".swagger-ui .info .title").wait_for()
    assert "prebuildd" in await page.locator(".swagger-ui .info .title").inner_text()
    assert any(url.endswith("/openapi.json") for url in browser.requested)


async def test_the_live_table_waits_while_the_keyboard_is_inside_it(
    demo_server: RunningServer, browser: Browsing
) -> None:
    page = await browser.page()
    await browser.login(page, demo_server.owner_token)
    await page.clock.install()  # the page's timers run when the test says: no waiting for the 2 s poll
    await page.goto(f"{browser.base_url}/pools")
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if r.url.endswith("/pools/body") else None)
    retry = page.get_by_role("button", name="Retry local-workspace/hello")
    await retry.focus()
    await page.clock.run_for(6_000)  # three polls' worth, with the focus on a button of the table
    await page.evaluate("document.activeElement.blur()")
    async with page.expect_request(lambda r: r.url.endswith("/pools/body")):
        await page.clock.run_for(2_500)
    assert len(polls) == 1, polls  # only the poll after the focus left
    await retry.focus()  # the button is still the one the user reached (not replaced while focused)
