"""The Workspaces, Queue, Templates and Audit pages over plain HTTP, in process, on the real database: each
renders for the roles the API allows and is refused (403) or hidden (404) for the others, the build-log fragment
appends only new lines and stops polling once the build has finished, and no page shows a prebuildd secret."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from jinja2 import ChoiceLoader, DictLoader

from prebuildd.dashboard import pagekit
from prebuildd.domain.secrets import AGENT_TOKEN_PREFIX, new_secret
from prebuildd.identity import auth, users
from prebuildd.identity.audit import AuditContext, record
from tests.support.dashboard import dashboard_app
from tests.support.env import Env

SECRET = new_secret(AGENT_TOKEN_PREFIX)

LOGGING = f"""
provisioner = "echo"
[echo.start]
logs = ["cloning", "connecting with {SECRET}", "ready"]
"""

FAILING_IMPORT = f"""
provisioner = "echo"
[echo.import]
result = "failure"
error = "import script: exit 3 ({SECRET})"
logs = ["checking the manifest"]
"""

# Only when the dashboard's own layout is not there (the pages are tested on their own).
FALLBACK_BASE = (
    "<!doctype html><html lang=en><title>{% block title %}{% endblock %}</title>"
    "<main>{% block content %}{% endblock %}</main></html>"
)


@dataclass
class Site:
    client: httpx.AsyncClient
    tokens: dict[str, str]

    async def get(self, who: str, path: str) -> httpx.Response:
        return await self.client.get(path, headers={"Authorization": f"Bearer {self.tokens[who]}"})


@pytest.fixture
async def site(env: Env) -> AsyncIterator[Site]:
    _, app = dashboard_app(env)
    loader = pagekit.TEMPLATES.env.loader
    assert loader is not None
    pagekit.TEMPLATES.env.loader = ChoiceLoader([loader, DictLoader({"base.html": FALLBACK_BASE})])
    tokens = {}
    for name, role in (("mona", "member"), ("tess", "template-admin"), ("oscar", "owner")):
        user = await users.create_user(env.db, env.clock, username=name, role=role)
        tokens[name] = (await auth.create_token(env.db, env.clock, user_id=user.id, name="t"))[1]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield Site(client, tokens)
    pagekit.TEMPLATES.env.loader = loader


async def test_every_page_renders_for_its_roles_and_is_refused_to_the_others(env: Env, site: Site) -> None:
    await env.push("t", LOGGING)
    for who in ("mona", "tess", "oscar"):
        for path in ("/workspaces", "/templates"):
            page = await site.get(who, path)
            assert page.status_code == 200, (who, path, page.text)
    assert (await site.get("mona", "/queue")).status_code == 403
    assert (await site.get("mona", "/queue/body")).status_code == 403
    assert (await site.get("tess", "/queue")).status_code == 200
    for who in ("mona", "tess"):
        assert (await site.get(who, "/audit")).status_code == 403, who
    assert (await site.get("oscar", "/audit")).status_code == 200
    assert (await site.client.get("/workspaces")).headers["location"] == "/login?next=/workspaces"


async def test_a_member_sees_their_workspace_and_its_log_with_secrets_masked(env: Env, site: Site) -> None:
    pushed = await env.push("t", LOGGING)
    mona = await users.user_named(env.db, env.org_id, "mona")
    created = await env.create(pushed.template_id, "monas", owner_id=mona.id)
    other = await env.create(pushed.template_id, "alices")

    listing = await site.get("mona", "/workspaces")
    assert "monas" in listing.text and "alices" not in listing.text
    everyone = await site.get("tess", "/workspaces")
    assert "monas" in everyone.text and "alices" in everyone.text
    assert (await site.get("mona", f"/workspaces/{other.workspace_id}")).status_code == 404
    assert (await site.get("mona", f"/workspaces/builds/{other.build_id}/log")).status_code == 404

    pending = await site.get("mona", f"/workspaces/{created.workspace_id}")
    assert pending.status_code == 200
    assert "pending" in pending.text and 'hx-trigger="every 1s"' in pending.text

    await env.run_jobs()
    fragment = await site.get("mona", f"/workspaces/builds/{created.build_id}/log?after=0")
    assert fragment.status_code == 200
    assert "cloning" in fragment.text and "ready" in fragment.text
    assert SECRET not in fragment.text and "[redacted]" in fragment.text
    assert "hx-trigger" not in fragment.text  # the build has finished: no more polling
    assert 'hx-swap-oob="true"' in fragment.text and "succeeded" in fragment.text
    last = max(int(n) for n in re.findall(r'data-line="(\d+)"', fragment.text))
    after = await site.get("mona", f"/workspaces/builds/{created.build_id}/log?after={last}")
    assert "log-line" not in after.text.replace("log-status", "")  # nothing new: nothing appended

    done = await site.get("mona", f"/workspaces/{created.workspace_id}")
    assert "cloning" in done.text and SECRET not in done.text and "hx-trigger" not in done.text


async def test_the_queue_page_shows_why_a_job_waits(env: Env, site: Site) -> None:
    pushed = await env.push("t", LOGGING)  # pushed before: the import ran with the test's own daemon
    await env.create(pushed.template_id, "stuck")
    page = await site.get("tess", "/queue")
    assert page.status_code == 200
    assert "no provisioner for kind echo" in page.text
    assert "1 job" in page.text and "0 of 0 online" in page.text
    assert 'hx-get="http://127.0.0.1/queue/body"' in page.text


async def test_import_errors_and_logs_are_for_template_admins(env: Env, site: Site) -> None:
    failed = await env.push("broken", FAILING_IMPORT)
    as_member = await site.get("mona", "/templates")
    assert "import failed (the error is shown to template-admins)" in as_member.text
    assert "exit 3" not in as_member.text and "import log" not in as_member.text
    as_admin = await site.get("tess", "/templates")
    assert "exit 3" in as_admin.text and SECRET not in as_admin.text
    path = f"/templates/broken/versions/{failed.version_name}/log"
    assert path in as_admin.text
    log = await site.get("tess", path)
    assert log.status_code == 200 and "checking the manifest" in log.text and SECRET not in log.text
    assert (await site.get("mona", path)).status_code == 403
    assert (await site.get("tess", "/templates/nothing/versions/v1/log")).status_code == 404


async def test_the_audit_page_shows_who_did_what_and_pages_back(env: Env, site: Site) -> None:
    oscar = await users.user_named(env.db, env.org_id, "oscar")
    context = AuditContext(env.clock, oscar.id, "oscar", source_ip="127.0.0.1")
    async with env.db.transaction() as conn:
        for i in range(60):
            env.clock.advance(1)
            await record(
                conn, context, "template.push", type="template", name=f"t{i}", organization_id=env.org_id
            )
    first = await site.get("oscar", "/audit?action=template.")
    assert first.status_code == 200
    assert "template.push" in first.text and ">t59<" in first.text and "oscar" in first.text
    assert ">t9<" not in first.text  # 50 a page: the oldest ten are on the next one
    older = re.search(r'href="([^"]*before=\d+[^"]*)" rel="next"', first.text)
    assert older is not None and "action=template." in older.group(1)
    second = await site.client.get(
        older.group(1).replace("&amp;", "&"), headers={"Authorization": f"Bearer {site.tokens['oscar']}"}
    )
    assert ">t9<" in second.text and ">t0<" in second.text and ">t10<" not in second.text
    assert "End of the log." in second.text
    none = await site.get("oscar", "/audit?outcome=denied")
    assert "No entries match these filters." in none.text
    assert (await site.get("oscar", "/audit?outcome=maybe")).status_code == 400


async def test_an_import_log_polls_while_the_import_runs_and_stops_after(env: Env, site: Site) -> None:
    pushed = await env.push("broken", FAILING_IMPORT, run_import=False)
    path = f"/templates/broken/versions/{pushed.version_name}/log"
    waiting = await site.get("tess", path)
    assert waiting.status_code == 200 and "pending" in waiting.text
    assert f'hx-get="http://127.0.0.1{path}/lines?after=0"' in waiting.text

    await env.run_jobs()
    fragment = await site.get("tess", f"{path}/lines?after=0")
    assert "checking the manifest" in fragment.text and "hx-trigger" not in fragment.text
    assert 'id="import-status" hx-swap-oob="true"' in fragment.text and "failed" in fragment.text
    assert "exit 3" in fragment.text and SECRET not in fragment.text
    assert (await site.get("mona", f"{path}/lines?after=0")).status_code == 403


async def test_a_long_log_is_read_page_after_page_without_waiting_between_pages(
    env: Env, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prebuildd.dashboard.views import workspaces as views

    monkeypatch.setattr(views, "LOG_PAGE", 2)
    pushed = await env.push("t", LOGGING)
    mona = await users.user_named(env.db, env.org_id, "mona")
    created = await env.create(pushed.template_id, "ws", owner_id=mona.id)
    await env.run_jobs()
    path = f"/workspaces/builds/{created.build_id}/log"
    outputs: list[str] = []
    after, triggers = 0, []
    for _ in range(10):
        fragment = (await site.get("mona", f"{path}?after={after}")).text
        outputs += re.findall(r'<span class="log-text">([^<]*)</span>', fragment)
        triggers += re.findall(r'hx-trigger="([^"]+)"', fragment)
        poller = re.search(r"after=(\d+)", fragment)
        if poller is None:
            break
        after = int(poller.group(1))
    assert outputs[:3] == ["cloning", "connecting with [redacted]", "ready"]
    assert len(outputs) == len(set(outputs))  # each line once
    assert triggers and set(triggers) == {"load"}  # full pages follow at once; the last one ends the polling
