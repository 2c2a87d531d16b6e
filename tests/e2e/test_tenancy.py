"""Organizations as tenants, end to end over HTTP: the site owner manages organizations, roles are per
membership, and nothing of one organization is reachable from another (users, tokens, pools, workspaces, jobs
through provisioner keys). Members see pool statuses and counts, never build error text."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api import API, push, wait_imported
from tests.support.cli import Cli
from tests.support.server import RunningServer, start_server
from tests.support.waiting import wait_for

ORG = "Prebuildd-Organization"
DAEMON = f"{API}/provisioner/daemon"

POOL = """
provisioner = "exec"
[exec]
create = "create.sh"
delete = "delete.sh"
[[presets]]
name = "warm"
[presets.prebuilds]
instances = 1
"""
FILES = {"create.sh": "#!/bin/sh\necho ready\n", "delete.sh": "#!/bin/sh\necho removed\n"}
LEAKY = {
    "create.sh": "#!/bin/sh\necho 'DB_PASSWORD=hunter2-secret' >&2\nexit 3\n",
    "delete.sh": "#!/bin/sh\necho removed\n",
}
SECRET = "hunter2-secret"


@dataclass
class Tenants:
    """Org ``default``: admin (site owner), alice (member), tadmin (template-admin). Org ``b``: bob (owner),
    carol (template-admin). dave: member of both."""

    running: RunningServer
    tokens: dict[str, str]

    def client(self, user: str, org: str | None = None) -> httpx.AsyncClient:
        client = self.running.client(self.tokens[user])
        if org is not None:
            client.headers[ORG] = org
        return client


async def _user(admin: httpx.AsyncClient, org: str, username: str, role: str) -> str:
    created = await admin.post(f"{API}/users", json={"username": username, "role": role}, headers={ORG: org})
    assert created.status_code == 201, created.text
    assert created.json()["role"] == role
    token = await admin.post(f"{API}/tokens", json={"name": "t", "username": username}, headers={ORG: org})
    assert token.status_code == 201, token.text
    secret: str = token.json()["secret"]
    return secret


async def tenants(running: RunningServer) -> Tenants:
    tokens = {"admin": running.owner_token}
    async with running.client() as admin:
        created = await admin.post(f"{API}/organizations", json={"name": "b", "display_name": "Bee"})
        assert created.status_code == 201, created.text
        for org, name, role in [
            ("default", "alice", "member"),
            ("default", "tadmin", "template-admin"),
            ("b", "bob", "owner"),
            ("b", "carol", "template-admin"),
            ("default", "dave", "member"),
        ]:
            tokens[name] = await _user(admin, org, name, role)
        joined = await admin.put(f"{API}/members/dave", json={"role": "member"}, headers={ORG: "b"})
        assert joined.status_code == 200, joined.text
    return Tenants(running, tokens)


@pytest.fixture
async def orgs(running_server: RunningServer) -> Tenants:
    return await tenants(running_server)


async def _push_pool(client: httpx.AsyncClient, tmp: Path, name: str, files: dict[str, str]) -> None:
    pushed = await push(client, tmp, name, POOL, files, activate=True)
    assert pushed.status_code == 201, pushed.text
    await wait_imported(client, name, "v1")


async def _status(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get(f"{API}/prebuilds/status")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- the tenancy model ------------------------------------------------------------------------------------


async def test_the_site_owner_manages_organizations_and_each_user_sees_their_own(
    orgs: Tenants, tmp_path: Path
) -> None:
    async with orgs.client("admin") as admin, orgs.client("bob") as bob, orgs.client("dave") as dave:
        every = await admin.get(f"{API}/organizations")
        assert [(o["name"], o["role"]) for o in every.json()] == [("b", "owner"), ("default", "owner")]
        assert [(o["name"], o["role"]) for o in (await bob.get(f"{API}/organizations")).json()] == [
            ("b", "owner")
        ]
        assert {o["name"]: o["role"] for o in (await dave.get(f"{API}/organizations")).json()} == {
            "b": "member",
            "default": "member",
        }
        # Only the site owner creates, renames and deletes organizations, even an organization's owner may not.
        assert (await bob.post(f"{API}/organizations", json={"name": "c"})).status_code == 403
        assert (await bob.patch(f"{API}/organizations/b", json={"display_name": "x"})).status_code == 403
        assert (await bob.delete(f"{API}/organizations/b")).status_code == 403
        assert (await bob.get(f"{API}/organizations/default")).status_code == 404
        assert (await admin.post(f"{API}/organizations", json={"name": "b"})).status_code == 409
        renamed = await admin.patch(f"{API}/organizations/b", json={"name": "bee"})
        assert renamed.status_code == 200 and renamed.json()["name"] == "bee"
        bob.headers[ORG] = "bee"
        assert (await bob.get(f"{API}/users/me")).json()["role"] == "owner"

        # A member of several organizations names one; without it, the server asks.
        ambiguous = await dave.get(f"{API}/templates")
        assert ambiguous.status_code == 400 and ORG in ambiguous.json()["message"]
        dave.headers[ORG] = "bee"
        assert (await dave.get(f"{API}/templates")).status_code == 200
        assert (await dave.get(f"{API}/users/me", headers={ORG: "nope"})).status_code == 404

        # Deleting an organization with a template left is refused, naming it; then it goes.
        await _push_pool(bob, tmp_path, "app", FILES)
        refused = await admin.delete(f"{API}/organizations/bee")
        assert refused.status_code == 409 and "app" in refused.json()["message"], refused.text
        assert (await admin.delete(f"{API}/organizations/default")).status_code == 409
        await wait_for(lambda: _no_prebuilds_busy(bob), timeout=60, what="the pool of app to settle")
        assert (await bob.delete(f"{API}/templates/app")).status_code == 204
        await wait_for(lambda: _deleted(admin, "bee"), timeout=60, what="organization bee to be deleted")
        assert [o["name"] for o in (await admin.get(f"{API}/organizations")).json()] == ["default"]
        assert (await bob.get(f"{API}/users/me")).status_code == 404  # bob's only organization is gone


async def _no_prebuilds_busy(client: httpx.AsyncClient) -> bool:
    presets = (await _status(client))["presets"]
    return all(p["starting"] == 0 for p in presets)


async def _deleted(admin: httpx.AsyncClient, org: str) -> bool:
    """Whether the organization could be deleted (its prebuilds' workspaces go after the template)."""
    response = await admin.delete(f"{API}/organizations/{org}")
    return response.status_code in (204, 404)


# -- users and tokens -------------------------------------------------------------------------------------


async def test_an_owner_of_another_organization_cannot_touch_users_or_tokens(orgs: Tenants) -> None:
    async with orgs.client("admin") as admin, orgs.client("bob") as bob:
        admin_tokens = (await admin.get(f"{API}/tokens")).json()
        # The reproduction: a token for org default's owner, issued by org b's owner.
        assert (await bob.post(f"{API}/tokens", json={"name": "x", "username": "admin"})).status_code == 404
        assert (await bob.patch(f"{API}/users/alice", json={"suspended": True})).status_code == 404
        assert (await bob.patch(f"{API}/users/admin", json={"role": "member"})).status_code == 404
        assert (await bob.delete(f"{API}/tokens/{admin_tokens[0]['id']}")).status_code == 404
        # Listing and probing users of another organization.
        assert {u["username"] for u in (await bob.get(f"{API}/users")).json()} == {"bob", "carol", "dave"}
        assert (await bob.get(f"{API}/users", headers={ORG: "default"})).status_code == 404
        assert (await bob.put(f"{API}/members/alice", json={"role": "member"})).status_code == 404
        assert (await bob.put(f"{API}/members/nobody", json={"role": "member"})).status_code == 404
        # dave is also in default, which bob does not own: bob changes dave's role in b, nothing beyond.
        assert (await bob.patch(f"{API}/users/dave", json={"role": "template-admin"})).status_code == 200
        assert (await bob.post(f"{API}/tokens", json={"name": "x", "username": "dave"})).status_code == 403
        assert (await bob.patch(f"{API}/users/dave", json={"suspended": True})).status_code == 403
        # carol is only in b: bob administers her.
        assert (await bob.post(f"{API}/tokens", json={"name": "x", "username": "carol"})).status_code == 201
        assert (await bob.patch(f"{API}/users/carol", json={"suspended": True})).status_code == 200
    async with orgs.client("dave", "b") as dave_b, orgs.client("dave", "default") as dave_a:
        assert (await dave_b.get(f"{API}/users/me")).json()["role"] == "template-admin"
        assert (await dave_a.get(f"{API}/users/me")).json()["role"] == "member"  # roles are per organization
        assert (await dave_a.get(f"{API}/users")).status_code == 403
    async with orgs.client("bob") as bob:
        # The last owner of b cannot step down, nor be removed.
        assert (await bob.patch(f"{API}/users/bob", json={"role": "member"})).status_code == 409
        assert (await bob.delete(f"{API}/members/bob")).status_code == 409
        assert (await bob.delete(f"{API}/members/dave")).status_code == 204
    async with orgs.client("dave") as dave:  # one organization again: no header needed
        assert (await dave.get(f"{API}/users/me")).json()["role"] == "member"


# -- pools ------------------------------------------------------------------------------------------------


async def test_prebuild_operations_act_on_the_callers_organization(orgs: Tenants, tmp_path: Path) -> None:
    async with orgs.client("admin") as admin, orgs.client("carol") as carol:
        await _push_pool(admin, tmp_path, "pool-a", FILES)
        await _push_pool(carol, tmp_path, "pool-b", FILES)
        ref = {"template": "pool-a", "preset": "warm"}
        for path in ("invalidate", "retry"):
            assert (await carol.post(f"{API}/prebuilds/{path}", json=ref)).status_code == 404, path
        cleanup = await carol.post(f"{API}/prebuilds/cleanup", json={"template": "pool-a", "dry_run": False})
        assert cleanup.status_code == 404, cleanup.text
        assert (
            await carol.patch(f"{API}/templates/pool-a/presets/warm", json={"instances": 5})
        ).status_code == 404
        explained = await carol.get(f"{API}/prebuilds/explain", params=ref)
        assert explained.status_code == 404
        # ... and on its own organization's template they work (they used to get a 404 here).
        own = {"template": "pool-b", "preset": "warm"}
        assert (await carol.post(f"{API}/prebuilds/retry", json=own)).status_code == 200
        assert (await carol.post(f"{API}/prebuilds/invalidate", json=own)).status_code == 200
        mine = await carol.post(f"{API}/prebuilds/cleanup", json={"template": "pool-b", "dry_run": True})
        assert mine.status_code == 200 and mine.json()["prebuilds"] == []
        assert (
            await carol.patch(f"{API}/templates/pool-b/presets/warm", json={"instances": 2})
        ).status_code == 200
        # /prebuilds/status lists the organization's presets only.
        assert {p["template"] for p in (await _status(carol))["presets"]} == {"pool-b"}
        assert {p["template"] for p in (await _status(admin))["presets"]} == {"pool-a"}
        # Pausing stops every organization's pools: the site owner's alone.
        async with orgs.client("bob") as bob:
            assert (await bob.put(f"{API}/settings", json={"reconciliation_paused": True})).status_code == 403
            paused = await bob.put(f"{API}/prebuilds/settings", json={"reconciliation_paused": True})
            assert paused.status_code == 403


async def test_members_see_statuses_and_counts_but_no_error_text(database_url: str, tmp_path: Path) -> None:
    running = await start_server(
        database_url, tmp_path / "server", reconcile_interval=0.5, backoff_interval=0.2
    )
    try:
        orgs = await tenants(running)
        async with orgs.client("admin") as admin, orgs.client("alice") as alice, orgs.client("bob") as bob:
            await _push_pool(admin, tmp_path, "leaky", LEAKY)

            async def hard_limited() -> bool:
                [preset] = (await _status(admin))["presets"]
                return bool(preset["status"] == "hard_limited")

            await wait_for(hard_limited, timeout=90, what="the leaky pool to be hard-limited")
            # An owner (and a template-admin) reads the error: that is how a pool gets fixed.
            [seen] = (await _status(admin))["presets"]
            assert SECRET in seen["hard_limit_reason"]
            explained = (
                await admin.get(f"{API}/prebuilds/explain", params={"template": "leaky", "preset": "warm"})
            ).json()
            assert any(SECRET in d["message"] for d in explained["decisions"])
            async with orgs.client("tadmin") as tadmin:
                [preset] = (await tadmin.get(f"{API}/templates/leaky/presets")).json()
                assert SECRET in (preset["prebuild_last_error"] or "")

            # A member sees the status and the counts, not the text.
            [hidden] = (await _status(alice))["presets"]
            assert hidden["status"] == "hard_limited" and hidden["failed"] >= 1
            assert "creations failed" in hidden["hard_limit_reason"]
            member_explain = await alice.get(
                f"{API}/prebuilds/explain", params={"template": "leaky", "preset": "warm"}
            )
            assert member_explain.status_code == 200
            [listed] = (await alice.get(f"{API}/templates/leaky/presets")).json()
            assert listed["prebuild_last_error"] is None
            for text in (str(await _status(alice)), member_explain.text, str(listed)):
                assert SECRET not in text and "DB_PASSWORD" not in text
            assert (await alice.get(f"{API}/templates/leaky/versions/v1/logs")).status_code == 403
            # Another organization sees neither the text nor the pool.
            assert (await _status(bob))["presets"] == []
            assert (await bob.get(f"{API}/templates/leaky/presets")).status_code == 404
    finally:
        await running.server.stop()


# -- workspaces -------------------------------------------------------------------------------------------


async def test_a_workspace_owner_must_belong_to_the_templates_organization(
    orgs: Tenants, tmp_path: Path
) -> None:
    async with orgs.client("admin") as admin, orgs.client("tadmin") as tadmin:
        pushed = await push(admin, tmp_path, "plain", POOL.split("[[presets]]")[0], FILES, activate=True)
        assert pushed.status_code == 201, pushed.text
        await wait_imported(admin, "plain", "v1")
        foreign = await tadmin.post(
            f"{API}/workspaces", json={"template": "plain", "name": "w1", "owner": "bob"}
        )
        assert foreign.status_code == 404, foreign.text
        ok = await tadmin.post(
            f"{API}/workspaces", json={"template": "plain", "name": "w2", "owner": "alice"}
        )
        assert ok.status_code == 201, ok.text
        listed = await tadmin.get(f"{API}/workspaces", params={"owner": "bob"})
        assert listed.status_code == 404
    async with orgs.client("carol") as carol:
        assert (await carol.get(f"{API}/workspaces/{ok.json()['id']}")).status_code == 404
        assert (await carol.get(f"{API}/workspaces", params={"owner": "all"})).json() == []


# -- provisioner keys -------------------------------------------------------------------------------------


async def test_a_key_of_another_organization_acquires_nothing_and_site_wide_keys_need_the_site_owner(
    idle_server: RunningServer, tmp_path: Path
) -> None:
    orgs = await tenants(idle_server)
    async with orgs.client("admin") as admin, orgs.client("bob") as bob:
        b_key = await bob.post(f"{API}/provisioner-keys", json={"name": "b-builder"})
        assert b_key.status_code == 201, b_key.text
        assert (
            await bob.post(f"{API}/provisioner-keys", json={"name": "all", "site_wide": True})
        ).status_code == 403
        assert (await bob.get(f"{API}/provisioner-keys", params={"site_wide": True})).status_code == 403
        site = await admin.post(f"{API}/provisioner-keys", json={"name": "all", "site_wide": True})
        assert site.status_code == 201, site.text
        assert site.json()["key"]["organization_id"] is None
        assert [k["name"] for k in (await admin.get(f"{API}/provisioner-keys")).json()] == []
        assert [
            k["name"] for k in (await admin.get(f"{API}/provisioner-keys", params={"site_wide": True})).json()
        ] == ["all"]

        pushed = await push(admin, tmp_path, "queued", POOL.split("[[presets]]")[0], FILES)
        assert pushed.status_code == 201, pushed.text
        job_id = pushed.json()["job_id"]
        acquire = {"worker_id": "w#1", "kinds": ["exec"], "wait_seconds": 0}
        async with idle_server.client(b_key.json()["secret"]) as daemon_b:
            assert (await daemon_b.post(f"{DAEMON}/acquire", json=acquire)).status_code == 204
            assert (
                await daemon_b.post(f"{DAEMON}/jobs/{job_id}/heartbeat", json={"worker_id": "w#1"})
            ).status_code == 404
        # Nothing was done for the foreign job: it was never started nor bound to a worker.
        services = idle_server.server.services
        assert services is not None
        async with services.db.transaction() as conn:
            cur = await conn.execute(
                "SELECT job_status, started_at, worker_id FROM provisioner_jobs WHERE id = %s", (job_id,)
            )
            assert await cur.fetchone() == {"job_status": "pending", "started_at": None, "worker_id": None}
        async with idle_server.client(site.json()["secret"]) as daemon_all:
            taken = await daemon_all.post(f"{DAEMON}/acquire", json=acquire)
            assert taken.status_code == 200 and taken.json()["id"] == job_id


# -- the CLI ----------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)  # about fifteen CLI processes, each a Python start: slow on a loaded machine
async def test_the_cli_names_the_organization_with_org_or_the_one_remembered(
    orgs: Tenants, tmp_path: Path
) -> None:
    cli = Cli(tmp_path / "cli")
    token_file = tmp_path / "dave-token"
    token_file.write_text(orgs.tokens["dave"])
    admin_cli = Cli(tmp_path / "admin-cli")
    await admin_cli.ok("login", orgs.running.url, "--token", orgs.running.owner_token)
    created = await admin_cli.ok("orgs", "create", "c", "--display-name", "Sea")
    assert "c" in created.err
    await admin_cli.ok("users", "create", "erin", "--role", "owner", "--org", "c")
    await admin_cli.ok("orgs", "members", "add", "dave", "--role", "template-admin", "--org", "c")
    await admin_cli.ok("orgs", "members", "set-role", "dave", "member", "--org", "c")
    members = await admin_cli.ok("--org", "c", "orgs", "members", "list")
    assert "erin" in members.out and "dave" in members.out and "alice" not in members.out
    refused = await admin_cli.refused("orgs", "delete", "default")
    assert "default" in refused.err

    # dave, in three organizations, logs in naming one: it is remembered, and --org overrides it.
    await cli.ok("login", orgs.running.url, "--token-file", str(token_file), "--org", "b")
    assert re.search(r"organization:\s+b\n", (await cli.ok("whoami")).out)
    await cli.ok("orgs", "use", "c")
    assert (
        "template-admin" in (await cli.refused("users", "list")).err
    )  # a member of c does not list its users
    await cli.ok("templates", "list", "--org", "default")
    await admin_cli.ok("orgs", "members", "remove", "dave", "--org", "c")
    await cli.refused("templates", "list")  # the remembered organization is no longer his
    await admin_cli.ok("orgs", "delete", "c")
    assert [o["name"] for o in json.loads((await admin_cli.ok("orgs", "list", "--json")).out)] == [
        "b",
        "default",
    ]


async def test_a_failed_imports_error_is_for_template_admins(orgs: Tenants, tmp_path: Path) -> None:
    async with orgs.client("admin") as admin, orgs.client("alice") as alice:
        pushed = await push(
            admin, tmp_path, "missing", 'provisioner = "exec"\n[exec]\ncreate = "missing.sh"\n', {}
        )
        assert pushed.status_code == 201, pushed.text
        version = await wait_imported(admin, "missing", "v1")
        assert version["import_status"] == "failed" and "missing.sh" in version["import_error"]
        seen = (await alice.get(f"{API}/templates/missing/versions/v1")).json()
        assert seen["import_status"] == "failed" and "missing.sh" not in seen["import_error"]
        assert all(
            "missing.sh" not in str(v) for v in (await alice.get(f"{API}/templates/missing/versions")).json()
        )
        assert (await alice.get(f"{API}/templates/missing/versions/v1/logs")).status_code == 403
        assert (await admin.get(f"{API}/templates/missing/versions/v1/logs")).status_code == 200
