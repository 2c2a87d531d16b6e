"""Dashboard sessions over plain HTTP, in process, on the real database: signing in with an API token, the
cookie's flags, the CSRF and origin checks on every POST, logout, and a revoked token ending its session at once.
No page shows the token or the session id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from prebuildd.api.context import Services
from prebuildd.dashboard.session import COOKIE, csrf_of
from prebuildd.identity import auth, users
from tests.support.dashboard import dashboard_app
from tests.support.env import Env

BASE = "http://127.0.0.1"
SAME_ORIGIN = {"Origin": BASE}


@dataclass
class Site:
    client: httpx.AsyncClient
    token: str
    token_id: object
    services: Services
    app: FastAPI


@pytest.fixture
async def site(env: Env) -> AsyncIterator[Site]:
    services, app = dashboard_app(env)
    user = await users.create_user(env.db, env.clock, username="oscar", role="owner")
    token, secret = await auth.create_token(env.db, env.clock, user_id=user.id, name="browser")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield Site(client, secret, token.id, services, app)


async def _login(site: Site) -> str:
    answer = await site.client.post(
        "/login", data={"token": site.token, "next": "/pools"}, headers=SAME_ORIGIN
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/pools"
    session_id = site.client.cookies.get(COOKIE)
    assert session_id
    return session_id


async def test_without_a_session_pages_lead_to_the_login_form(site: Site) -> None:
    root = await site.client.get("/")
    assert (root.status_code, root.headers["location"]) == (303, "/login")
    page = await site.client.get("/pools")
    assert (page.status_code, page.headers["location"]) == (303, "/login?next=/pools")
    poll = await site.client.get("/queue/body", headers={"HX-Request": "true"})
    assert poll.status_code == 401 and poll.headers["HX-Redirect"].startswith("/login?next=")
    form = await site.client.get("/login")
    assert form.status_code == 200 and 'type="password"' in form.text
    # The API keeps its JSON errors.
    api = await site.client.get("/api/v1/workspaces")
    assert api.status_code == 401 and api.json()["code"] == "unauthenticated"


async def test_login_sets_a_strict_http_only_cookie_and_no_page_shows_a_secret(site: Site) -> None:
    answer = await site.client.post("/login", data={"token": site.token}, headers=SAME_ORIGIN)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "max-age", "path"} <= flags and "secure" not in flags  # plain http here
    assert "samesite=strict" in cookie.lower()
    session_id = site.client.cookies[COOKIE]
    assert site.token not in cookie
    page = await site.client.get("/pools")
    assert page.status_code == 200 and "oscar" in page.text
    for label in ("Pools", "Queue", "Workspaces", "Templates", "Audit", "Log out"):
        assert label in page.text
    assert csrf_of(session_id) in page.text  # the forms' token, which is not the session id
    assert site.token not in page.text and session_id not in page.text


async def test_an_inactive_token_does_not_sign_in(site: Site) -> None:
    answer = await site.client.post("/login", data={"token": "pbt_nope"}, headers=SAME_ORIGIN)
    assert answer.status_code == 401 and "not an active API token" in answer.text
    assert COOKIE not in site.client.cookies


async def test_a_login_from_another_site_is_refused(site: Site) -> None:
    answer = await site.client.post(
        "/login", data={"token": site.token}, headers={"Origin": "http://evil.example"}
    )
    assert answer.status_code == 403
    assert COOKIE not in site.client.cookies


async def test_a_post_without_the_csrf_token_or_from_another_origin_is_refused(site: Site) -> None:
    session_id = await _login(site)
    csrf = csrf_of(session_id)
    no_token = await site.client.post("/logout", data={}, headers=SAME_ORIGIN)
    assert no_token.status_code == 403 and "CSRF" in no_token.text
    wrong = await site.client.post("/logout", data={"csrf_token": "0" * 64}, headers=SAME_ORIGIN)
    assert wrong.status_code == 403
    elsewhere = await site.client.post(
        "/logout", data={"csrf_token": csrf}, headers={"Origin": "http://evil.example"}
    )
    assert elsewhere.status_code == 403
    nowhere = await site.client.post("/logout", data={"csrf_token": csrf})  # neither Origin nor Referer
    assert nowhere.status_code == 403
    assert (await site.client.get("/pools")).status_code == 200  # still signed in
    by_referer = await site.client.post(
        "/logout", data={"csrf_token": csrf}, headers={"Referer": f"{BASE}/pools"}
    )
    assert by_referer.status_code == 303


async def test_the_csrf_header_of_htmx_is_accepted(site: Site) -> None:
    session_id = await _login(site)
    answer = await site.client.post(
        "/logout", headers={**SAME_ORIGIN, "X-CSRF-Token": csrf_of(session_id), "HX-Request": "true"}
    )
    assert answer.status_code == 303


async def test_logout_ends_the_session_in_the_database(site: Site) -> None:
    session_id = await _login(site)
    answer = await site.client.post("/logout", data={"csrf_token": csrf_of(session_id)}, headers=SAME_ORIGIN)
    assert answer.status_code == 303 and answer.headers["location"] == "/login"
    assert COOKIE not in site.client.cookies
    site.client.cookies.set(COOKIE, session_id)  # a copy of the old cookie opens nothing
    assert (await site.client.get("/pools")).status_code == 303


async def test_revoking_the_token_ends_the_session_at_once(env: Env, site: Site) -> None:
    await _login(site)
    assert (await site.client.get("/pools")).status_code == 200
    owner = await users.acting_user(env.db, await users.user_named(env.db, env.org_id, "oscar"), None)
    await auth.revoke_token(env.db, env.clock, owner, site.token_id)  # type: ignore[arg-type]
    assert (await site.client.get("/pools")).status_code == 303
    assert COOKIE not in site.client.cookies  # the ended session's cookie is dropped on the way to the login


async def test_a_session_expires(env: Env, site: Site) -> None:
    await _login(site)
    env.clock.advance(site.services.config.dashboard_session_ttl + 1)
    assert (await site.client.get("/pools")).status_code == 303


PUBLIC = {("GET", "/"), ("GET", "/login"), ("POST", "/login")}


def dashboard_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the dashboard adds to the API's app (the API's own are the authz matrix's)."""
    found = []
    for context in iter_route_contexts(app.routes):
        path = str(context.path)
        if path.startswith(("/api/", "/docs", "/openapi")) or path in ("/healthz", "/readyz", "/metrics"):
            continue
        found += [(method, path) for method in sorted(context.methods or ()) if method != "HEAD"]
    return found


def concrete(path: str) -> str:
    return (
        path.replace("{org}", "default")
        .replace("{workspace_id}", "00000000-0000-0000-0000-000000000000")
        .replace("{build_id}", "00000000-0000-0000-0000-000000000000")
        .replace("{", "x")
        .replace("}", "")
    )


async def test_every_dashboard_route_needs_a_session_and_every_post_its_csrf_token(site: Site) -> None:
    routes = dashboard_routes(site.app)
    assert ("GET", "/pools") in routes and ("POST", "/actions/pause") in routes
    for method, path in routes:
        if (method, path) in PUBLIC:
            continue
        answer = await site.client.request(method, concrete(path), headers=SAME_ORIGIN)
        assert answer.status_code == 303, (method, path, answer.status_code)
        assert answer.headers["location"].startswith("/login?next="), (method, path)
    await _login(site)
    posts = [path for method, path in routes if method == "POST" and (method, path) not in PUBLIC]
    assert len(posts) >= 6
    for path in posts:
        answer = await site.client.post(concrete(path), data={"template": "t"}, headers=SAME_ORIGIN)
        assert answer.status_code == 403 and "CSRF" in answer.text, (path, answer.status_code)
    # None of them is in the API's OpenAPI document.
    documented = (await site.client.get("/openapi.json")).json()["paths"]
    assert not any(path in documented for _, path in routes)


async def test_a_member_of_two_organizations_sees_both_pools_and_chooses_where_pages_act(
    env: Env, site: Site
) -> None:
    from prebuildd.identity.organizations import create_organization

    root = await users.create_user(env.db, env.clock, username="root", site_owner=True, role="owner")
    bravo = await create_organization(env.db, env.clock, root, name="bravo")
    multi = await users.create_user(env.db, env.clock, username="multi", role="member")
    root_in_bravo = await users.acting_user(env.db, root, "bravo")
    await users.set_member(env.db, env.clock, root_in_bravo, "multi", "owner")  # bravo needs one
    secret = (await auth.create_token(env.db, env.clock, user_id=multi.id, name="t"))[1]
    answer = await site.client.post("/login", data={"token": secret}, headers=SAME_ORIGIN)
    assert answer.status_code == 303
    csrf = csrf_of(site.client.cookies[COOKIE])

    pools = await site.client.get("/pools")
    assert pools.status_code == 200
    assert 'id="organization-choice"' in pools.text and "bravo (owner)" in pools.text
    assert pools.text.count('class="org-pools"') == 2  # both organizations' pools, one section each
    assert (await site.client.get("/queue")).status_code == 200  # an owner in the first one by name, bravo

    foreign = await site.client.post(
        "/organization",
        data={"csrf_token": csrf, "organization": "00000000-0000-0000-0000-000000000001"},
        headers=SAME_ORIGIN,
    )
    assert foreign.status_code == 404
    chosen = await site.client.post(
        "/organization",
        data={"csrf_token": csrf, "organization": str(env.org_id), "next": "/queue"},
        headers=SAME_ORIGIN,
    )
    assert (chosen.status_code, chosen.headers["location"]) == (303, "/queue")
    assert (await site.client.get("/queue")).status_code == 403  # a member in the default one
    assert bravo.name == "bravo"


async def test_over_https_the_cookie_is_secure(site: Site) -> None:
    transport = httpx.ASGITransport(app=site.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://127.0.0.1") as client:
        answer = await client.post(
            "/login", data={"token": site.token}, headers={"Origin": "https://127.0.0.1"}
        )
        assert answer.status_code == 303
        flags = {part.strip().lower() for part in answer.headers["set-cookie"].split(";")}
        assert "secure" in flags and "httponly" in flags
        # An http page of the same host is another origin: its form is refused.
        csrf = csrf_of(client.cookies[COOKIE])
        other = await client.post("/logout", data={"csrf_token": csrf}, headers={"Origin": BASE})
        assert other.status_code == 403
