"""The audit log over real HTTP: an entry for every mutating action (who, which token, what, from where, how
it ended), refusals recorded with their outcome while the refused change left nothing, owners only, and the
CLI reading it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from prebuildd.server.process import OWNER_TOKEN_FILE
from tests.support.api import API, push, user_with_token, wait_imported
from tests.support.cli import Cli
from tests.support.server import RunningServer

ECHO = """
provisioner = "echo"

[[presets]]
name = "small"
"""


async def _entries(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(f"{API}/audit", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


async def test_every_mutating_action_is_recorded_with_who_what_and_where(
    running_server: RunningServer, tmp_path: Path
) -> None:
    async with running_server.client() as owner:
        [first_token] = _ok(await owner.get(f"{API}/tokens"))
        # Users: create, role, suspend, unsuspend.
        alice = _ok(await owner.post(f"{API}/users", json={"username": "alice"}), 201)
        _ok(await owner.patch(f"{API}/users/alice", json={"role": "template-admin"}))
        _ok(await owner.patch(f"{API}/users/alice", json={"suspended": True}))
        _ok(await owner.patch(f"{API}/users/alice", json={"suspended": False}))
        # Tokens and provisioner keys: created and revoked.
        token = _ok(await owner.post(f"{API}/tokens", json={"name": "ci", "username": "alice"}), 201)
        assert (await owner.delete(f"{API}/tokens/{token['token']['id']}")).status_code == 204
        key = _ok(await owner.post(f"{API}/provisioner-keys", json={"name": "runner"}), 201)
        assert (await owner.delete(f"{API}/provisioner-keys/runner")).status_code == 204
        # Templates: push, activate, deprecate (and lift it), the pool's settings and operations, delete.
        pushed = _ok(await push(owner, tmp_path, "app", ECHO), 201)
        assert (await wait_imported(owner, "app", "v1"))["import_status"] == "succeeded"
        _ok(await owner.patch(f"{API}/templates/app", json={"active_version": "v1"}))
        _ok(
            await owner.patch(f"{API}/templates/app", json={"deprecated": True, "deprecation_message": "old"})
        )
        _ok(await owner.patch(f"{API}/templates/app", json={"deprecated": False}))
        _ok(await owner.patch(f"{API}/templates/app/presets/small", json={"instances": 0, "ttl": "1h"}))
        _ok(await owner.post(f"{API}/prebuilds/invalidate", json={"template": "app"}))
        _ok(await owner.post(f"{API}/prebuilds/retry", json={"template": "app", "preset": "small"}))
        _ok(await owner.post(f"{API}/prebuilds/cleanup", json={"template": "app", "dry_run": True}))
        _ok(await owner.post(f"{API}/prebuilds/cleanup", json={"template": "app", "dry_run": False}))
        _ok(await owner.put(f"{API}/prebuilds/settings", json={"reconciliation_paused": True}))
        _ok(await owner.put(f"{API}/settings", json={"reconciliation_paused": False}))
        tagged = await owner.delete(f"{API}/templates/app", headers={"X-Request-Id": "delete-app-1"})
        assert tagged.status_code == 204 and tagged.headers["x-request-id"] == "delete-app-1"

        entries = await _entries(owner, actor="admin", since="1h")

    by_action: dict[str, list[dict[str, Any]]] = {}
    for entry in reversed(entries):
        by_action.setdefault(entry["action"], []).append(entry)
    expected = {
        "user.create": [("user", "alice", alice["id"])],
        "user.role": [("user", "alice", alice["id"])],
        "user.suspend": [("user", "alice", alice["id"])],
        "user.unsuspend": [("user", "alice", alice["id"])],
        "token.create": [("token", "ci", token["token"]["id"])],
        "token.revoke": [("token", "", token["token"]["id"])],
        "key.create": [("provisioner_key", "runner", key["key"]["id"])],
        "key.revoke": [("provisioner_key", "runner", key["key"]["id"])],
        "template.push": [("template", "app", pushed["template_id"])],
        "template.activate": [("template", "app", pushed["template_id"])],
        "template.deprecate": [("template", "app", pushed["template_id"])],
        "template.undeprecate": [("template", "app", pushed["template_id"])],
        "preset.set": [("preset", "app/small", None)],
        "prebuilds.invalidate": [("template", "app", pushed["template_id"])],
        "prebuilds.retry": [("preset", "app/small", None)],
        "prebuilds.cleanup": [("template", "app", None)],  # the dry run changed nothing: not recorded
        "prebuilds.pause": [("site", "", None)],
        "prebuilds.resume": [("site", "", None)],
        "template.delete": [("template", "app", pushed["template_id"])],
    }
    seen = {
        action: [
            (e["object_type"], e["object_name"], e["object_id"] if expected[action][0][2] else None)
            for e in found
        ]
        for action, found in by_action.items()
        if action in expected
    }
    assert seen == expected
    # The first owner and their token, created by the server at first start, are recorded as the system's.
    assert set(by_action) == set(expected)
    for entry in entries:
        assert (entry["actor"], entry["outcome"], entry["token_id"]) == ("admin", "ok", first_token["id"]), (
            entry
        )
        assert entry["source_ip"] == "127.0.0.1" and entry["request_id"], entry
        assert entry["error_code"] is None and entry["error_message"] is None
    [delete] = by_action["template.delete"]
    assert delete["request_id"] == "delete-app-1"
    assert by_action["user.role"][0]["detail"] == {"from": "member", "to": "template-admin"}
    assert by_action["template.push"][0]["detail"]["version"] == "v1"
    assert by_action["preset.set"][0]["detail"] == {"presets": ["small"], "instances": 0, "ttl_seconds": 3600}
    assert by_action["key.create"][0]["organization_id"] is not None
    assert by_action["prebuilds.pause"][0]["organization_id"] is None  # a site-wide action
    assert {e["action"] for e in await _system_entries(running_server)} == {"user.create", "token.create"}


async def _system_entries(running: RunningServer) -> list[dict[str, Any]]:
    async with running.client() as owner:
        return await _entries(owner, actor="system")


async def test_refused_actions_are_recorded_once_and_leave_no_change(
    running_server: RunningServer, tmp_path: Path
) -> None:
    member = await user_with_token(running_server, "bob")
    admin = await user_with_token(running_server, "tad", role="template-admin")
    async with running_server.client(member) as bob:
        assert (await bob.post(f"{API}/users", json={"username": "mallory"})).status_code == 403
        assert (await bob.post(f"{API}/tokens", json={"name": "x", "username": "admin"})).status_code == 403
        assert (
            await bob.put(f"{API}/prebuilds/settings", json={"reconciliation_paused": False})
        ).status_code == 403
        assert (await push(bob, tmp_path, "app", ECHO)).status_code == 403
        assert (await bob.get(f"{API}/audit")).status_code == 403  # owners only
    async with running_server.client(admin) as tad:
        assert (await push(tad, tmp_path, "bad", "provisioner = 42\n")).status_code == 400
        assert (await tad.delete(f"{API}/templates/ghost")).status_code == 404
        assert (await tad.patch(f"{API}/templates/ghost", json={"deprecated": False})).status_code == 404
        assert (await tad.post(f"{API}/prebuilds/retry", json={"template": ""})).status_code == 400
        assert (await tad.get(f"{API}/audit")).status_code == 403
    async with running_server.client("pbt_not-a-token") as nobody:  # nobody to name: not recorded
        assert (await nobody.post(f"{API}/users", json={"username": "eve"})).status_code == 401
    async with running_server.client() as owner:
        taken = await owner.post(f"{API}/users", json={"username": "BOB"})
        assert taken.status_code == 409
        last = await owner.patch(f"{API}/users/admin", json={"role": "member"})
        assert last.status_code == 409
        refusals = [e for e in await _entries(owner) if e["outcome"] != "ok"]
        assert (await owner.get(f"{API}/users/me")).json()["role"] == "owner"
        assert await _entries(owner, action="user.role", outcome="ok") == []  # nothing changed
        assert (await owner.get(f"{API}/audit", params={"since": "yesterday"})).status_code == 400

    got = [
        (e["actor"], e["action"], e["outcome"], e["error_code"], e["object_type"], e["object_name"])
        for e in reversed(refusals)
    ]
    assert got == [
        ("bob", "user.create", "denied", "forbidden", "user", ""),
        ("bob", "token.create", "denied", "forbidden", "token", "x"),
        ("bob", "prebuilds.resume", "denied", "forbidden", "site", ""),
        ("bob", "template.push", "denied", "forbidden", "template", "app"),
        ("tad", "template.push", "invalid", "invalid_manifest", "template", "bad"),
        ("tad", "template.delete", "invalid", "not_found", "template", "ghost"),
        ("tad", "template.undeprecate", "invalid", "not_found", "template", "ghost"),
        ("tad", "prebuilds.retry", "invalid", "invalid_request", "template", ""),
        ("admin", "user.create", "conflict", "conflict", "user", "BOB"),
        ("admin", "user.role", "conflict", "conflict", "user", "admin"),
    ]
    assert all(e["error_message"] for e in refusals)
    assert "last active owner" in refusals[0]["error_message"]


async def test_the_cli_reads_the_audit_log(running_server: RunningServer, tmp_path: Path) -> None:
    cli = Cli(tmp_path / "cli")
    await cli.ok("login", running_server.url, "--token-file", str(running_server.data_dir / OWNER_TOKEN_FILE))
    await cli.ok("users", "create", "carol")
    listed = (
        await cli.ok("audit", "--actor", "admin", "--action", "user.", "--since", "1h", "--json")
    ).json()
    assert [(e["action"], e["object_name"], e["outcome"]) for e in listed] == [("user.create", "carol", "ok")]
    table = await cli.ok("audit", "--action", "user.create")
    assert "carol" in table.out and "system" in table.out  # the first owner, made by the server
    assert (await cli.ok("audit", "--action", "key.", "--json")).json() == []


ORG = "Prebuildd-Organization"


async def test_organizations_and_memberships_are_recorded_and_an_org_owner_reads_only_theirs(
    running_server: RunningServer,
) -> None:
    async with running_server.client() as admin:
        org = _ok(await admin.post(f"{API}/organizations", json={"name": "b"}), 201)
        _ok(await admin.patch(f"{API}/organizations/b", json={"name": "bee", "display_name": "Bee"}))
        bob = _ok(
            await admin.post(f"{API}/users", json={"username": "bob", "role": "owner"}, headers={ORG: "bee"}),
            201,
        )
        bob_token = _ok(
            await admin.post(f"{API}/tokens", json={"name": "t", "username": "bob"}, headers={ORG: "bee"}),
            201,
        )["secret"]
        carol = _ok(await admin.post(f"{API}/users", json={"username": "carol"}), 201)
        _ok(await admin.put(f"{API}/members/carol", json={"role": "member"}, headers={ORG: "bee"}))
        _ok(await admin.put(f"{API}/members/carol", json={"role": "template-admin"}, headers={ORG: "bee"}))
        assert (await admin.delete(f"{API}/members/carol", headers={ORG: "bee"})).status_code == 204
        _ok(await admin.post(f"{API}/organizations", json={"name": "gone"}), 201)
        assert (await admin.delete(f"{API}/organizations/gone")).status_code == 204
        # Refused: the default organization is never deleted; bob is no site owner.
        assert (await admin.delete(f"{API}/organizations/default")).status_code == 409
    async with running_server.client(bob_token) as client:
        assert (await client.post(f"{API}/organizations", json={"name": "mine"})).status_code == 403
        # An organization's owner reads the entries of their organization only.
        theirs = await _entries(client)
    async with running_server.client() as admin:
        everything = await _entries(admin)

    got = [
        (e["action"], e["outcome"], e["object_type"], e["object_name"], e["detail"].get("role"))
        for e in reversed(everything)
        if e["action"].startswith(("org.", "member."))
    ]
    assert got == [
        ("org.create", "ok", "organization", "b", None),
        ("org.rename", "ok", "organization", "bee", None),
        ("member.add", "ok", "user", "carol", "member"),
        ("member.role", "ok", "user", "carol", None),
        ("member.remove", "ok", "user", "carol", "template-admin"),
        ("org.create", "ok", "organization", "gone", None),
        ("org.delete", "ok", "organization", "gone", None),
        ("org.delete", "conflict", "organization", "default", None),
        ("org.create", "denied", "organization", "", None),
    ]
    by_action = {e["action"]: e for e in everything if e["outcome"] == "ok"}
    assert (
        by_action["org.rename"]["detail"]["from"] == "b" and by_action["org.rename"]["object_id"] == org["id"]
    )
    assert by_action["member.role"]["detail"] == {"from": "member", "to": "template-admin"}
    assert by_action["member.add"]["organization_id"] == org["id"]
    assert all(e["organization_id"] == org["id"] for e in theirs) and theirs
    assert {(e["action"], e["object_name"]) for e in theirs} >= {
        ("user.create", "bob"),
        ("member.add", "carol"),
        ("org.rename", "bee"),
    }
    assert ("user.create", "carol") not in {
        (e["action"], e["object_name"]) for e in theirs
    }  # the default org's
    assert bob["username"] == "bob" and carol["username"] == "carol"
