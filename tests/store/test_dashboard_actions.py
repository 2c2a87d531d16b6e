"""The dashboard's pool actions over plain HTTP, in process, on the real database: each goes through the API's
service call and is audited as the API's (an ``ok`` entry, or a ``denied`` one for a role that may not), a
member is refused every action, and the cleanup page is a dry run until its form is confirmed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from prebuildd.dashboard.session import COOKIE, csrf_of
from prebuildd.identity import auth, users
from tests.support.dashboard import dashboard_app
from tests.support.env import Env

BASE = "http://127.0.0.1"
POOL = """
provisioner = "echo"

[[presets]]
name = "small"
[presets.prebuilds]
instances = 1
"""


@dataclass
class Site:
    app: FastAPI
    tokens: dict[str, str]
    org_id: str

    @asynccontextmanager
    async def browser(self, who: str) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
        """A client signed in as ``who`` (cookie), and its CSRF token."""
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE) as client:
            answer = await client.post("/login", data={"token": self.tokens[who]}, headers={"Origin": BASE})
            assert answer.status_code == 303, answer.text
            yield client, csrf_of(client.cookies[COOKIE])

    async def api(self, path: str, **params: Any) -> Any:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE) as client:
            answer = await client.get(
                path, params=params, headers={"Authorization": f"Bearer {self.tokens['oscar']}"}
            )
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture
async def site(env: Env) -> AsyncIterator[Site]:
    _, app = dashboard_app(env)
    tokens = {}
    for name, role in (("mona", "member"), ("tess", "template-admin"), ("oscar", "owner")):
        user = await users.create_user(env.db, env.clock, username=name, role=role)
        tokens[name] = (await auth.create_token(env.db, env.clock, user_id=user.id, name="t"))[1]
    await env.push("app", POOL)
    yield Site(app, tokens, str(env.org_id))


async def _post(client: httpx.AsyncClient, path: str, csrf: str, **fields: str) -> httpx.Response:
    return await client.post(path, data={"csrf_token": csrf, **fields}, headers={"Origin": BASE})


async def _outcomes(site: Site, action: str) -> list[str]:
    page = await site.api("/api/v1/audit", action=action)
    return sorted(e["outcome"] for e in page["entries"])


async def test_a_template_admin_sets_the_pool_retries_and_invalidates_as_the_api_does(site: Site) -> None:
    async with site.browser("tess") as (client, csrf):
        pool = {"organization": site.org_id, "template": "app", "preset": "small"}
        page = await client.get("/orgs/default/pools/app/small")
        assert page.status_code == 200 and 'id="pool-settings"' in page.text
        answer = await _post(
            client,
            "/actions/pool",
            csrf,
            **pool,
            instances="3",
            autoscale="on",
            autoscale_min="1",
            autoscale_max="4",
            target_hit_rate="0.9",
            next="/orgs/default/pools/app/small",
        )
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/orgs/default/pools/app/small"
        for path in ("/actions/retry", "/actions/invalidate"):
            done = await _post(client, path, csrf, **pool)
            assert (done.status_code, done.headers["location"]) == (303, "/pools"), (path, done.text)
        bad = await _post(client, "/actions/pool", csrf, **pool, target_hit_rate="2", autoscale="on")
        assert bad.status_code == 400 and "target_hit_rate" in bad.text
    [status] = (await site.api("/api/v1/prebuilds/status"))["presets"]
    assert status["target_source"].startswith("autoscale")
    assert await _outcomes(site, "preset.set") == ["invalid", "ok"]
    assert await _outcomes(site, "prebuilds.retry") == ["ok"]
    assert await _outcomes(site, "prebuilds.invalidate") == ["ok"]


async def test_a_member_sees_no_action_and_every_action_is_refused_and_audited(site: Site) -> None:
    async with site.browser("mona") as (client, csrf):
        pools = await client.get("/pools")
        assert pools.status_code == 200 and "app/small" in pools.text
        for button in ("Retry", "Invalidate", "Pause reconciliation", "Clean up"):
            assert f">{button}" not in pools.text, button
        preset = await client.get("/orgs/default/pools/app/small")
        assert preset.status_code == 200 and "Save pool settings" not in preset.text
        pool = {"organization": site.org_id, "template": "app", "preset": "small"}
        for path in ("/actions/retry", "/actions/invalidate", "/actions/cleanup", "/actions/pool"):
            refused = await _post(client, path, csrf, **pool, instances="5")
            assert refused.status_code == 403, (path, refused.text)
        assert (await client.get("/orgs/default/pools/app/small/cleanup")).status_code == 403
        assert (await _post(client, "/actions/pause", csrf, paused="true")).status_code == 403
    for action in (
        "prebuilds.retry",
        "prebuilds.invalidate",
        "prebuilds.cleanup",
        "preset.set",
    ):
        assert await _outcomes(site, action) == ["denied"], action
    [status] = (await site.api("/api/v1/prebuilds/status"))["presets"]
    assert status["desired"] == 1


async def test_cleanup_is_a_dry_run_until_confirmed(site: Site) -> None:
    async with site.browser("tess") as (client, csrf):
        dry = await client.get("/orgs/default/pools/app/small/cleanup")
        assert dry.status_code == 200 and "A dry run" in dry.text and "No failed prebuild" in dry.text
        assert await _outcomes(site, "prebuilds.cleanup") == []  # a dry run is not audited, as in the API
        done = await _post(
            client, "/actions/cleanup", csrf, organization=site.org_id, template="app", preset="small"
        )
        assert done.status_code == 200 and "0 failed prebuilds deleted" in done.text
    assert await _outcomes(site, "prebuilds.cleanup") == ["ok"]
