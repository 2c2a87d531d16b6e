"""Signing in to the dashboard in a real browser: the login form, the session cookie out of the page's reach,
logout; and, over plain HTTP against the same server, a POST without its CSRF token refused."""

from __future__ import annotations

import httpx

from tests.support.browser import Browsing
from tests.support.server import RunningServer


async def test_login_with_an_api_token_and_logout(demo_server: RunningServer, browser: Browsing) -> None:
    page = await browser.page()
    await page.goto(f"{browser.base_url}/")
    await page.wait_for_url(f"{browser.base_url}/login")
    await browser.screenshot(page, "login")

    await page.get_by_label("API token").fill("pbt_not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("alert").filter(has_text="not an active API token").wait_for()

    await browser.login(page, demo_server.owner_token)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Pools").wait_for()
    assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script of the page reads the session
    cookies = await browser.context.cookies()
    session = next(c for c in cookies if c["name"] == "prebuildd_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["expires"] > 0
    html = await page.content()
    assert demo_server.owner_token not in html and session["value"] not in html

    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url(f"{browser.base_url}/login")
    await page.goto(f"{browser.base_url}/pools")
    await page.wait_for_url(f"{browser.base_url}/login?next=/pools")


async def test_a_post_without_the_csrf_token_is_refused(demo_server: RunningServer) -> None:
    origin = {"Origin": demo_server.url}
    async with httpx.AsyncClient(base_url=demo_server.url, timeout=30) as client:
        signed_in = await client.post("/login", data={"token": demo_server.owner_token}, headers=origin)
        assert signed_in.status_code == 303, signed_in.text
        refused = await client.post("/logout", data={}, headers=origin)
        assert refused.status_code == 403 and "CSRF" in refused.text
        assert (await client.get("/pools")).status_code == 200  # the refused POST did nothing
