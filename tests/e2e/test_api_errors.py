"""Every error status of the API with a realistic cause, as JSON `{"message", "detail"}` naming what was wrong."""

from __future__ import annotations

from pathlib import Path

from prebuildd.templates.archive import MAX_TEMPLATE_BYTES
from tests.support.api import API, push, user_with_token, wait_imported
from tests.support.server import RunningServer
from tests.support.templates import EXEC_FILES, EXEC_MANIFEST


async def test_a_broken_manifest_is_refused_naming_file_key_and_reason_and_nothing_is_stored(
    running_server: RunningServer, tmp_path: Path
) -> None:
    broken = EXEC_MANIFEST.replace('type = "number"', 'type = "integer"')
    async with running_server.client() as client:
        response = await push(client, tmp_path, "web", broken, EXEC_FILES)
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert detail["file"] == "prebuildd.toml" and detail["key"] == "parameters[cpu].type"
        assert "integer" in detail["reason"]
        assert "parameters[cpu].type" in response.json()["message"]
        garbage = await client.post(
            f"{API}/templates/web/versions",
            content=b"not a tarball",
            headers={"Content-Type": "application/gzip"},
        )
        assert garbage.status_code == 400 and "template archive" in garbage.json()["message"]
        huge = await client.post(
            f"{API}/templates/web/versions",
            content=b"\0" * (MAX_TEMPLATE_BYTES + 1),
            headers={"Content-Type": "application/gzip"},
        )
        assert huge.status_code == 413 and "10 MiB" in huge.json()["message"]
        assert (await client.get(f"{API}/templates")).json() == []
        assert (await client.get(f"{API}/jobs")).json() == []


async def test_bad_names_and_bodies_are_400s_naming_the_field(
    running_server: RunningServer, tmp_path: Path
) -> None:
    async with running_server.client() as client:
        bad_name = await push(client, tmp_path, "Web_App", EXEC_MANIFEST, EXEC_FILES)
        assert bad_name.status_code == 400
        assert "invalid template name 'Web_App'" in bad_name.json()["message"]
        assert bad_name.json()["detail"][0]["field"] == "path.name"
        too_long = await push(client, tmp_path, "a" * 65, EXEC_MANIFEST, EXEC_FILES)
        assert too_long.status_code == 400 and "at most 64" in too_long.json()["message"]

        assert (await push(client, tmp_path, "web", EXEC_MANIFEST, EXEC_FILES)).status_code == 201
        assert (await wait_imported(client, "web", "v1"))["import_status"] == "succeeded"
        # Out-of-range pool settings are refused naming the key (they once overflowed a column: a 500).
        for pool, field in (({"instances": 10**12}, "instances"), ({"ttl": "400d"}, "ttl")):
            response = await client.patch(f"{API}/templates/web/presets/web", json=pool)
            assert response.status_code == 400, (pool, response.text)
            message = response.json()["message"]
            assert f"{field}: " in message, response.text
            assert "at most" in message or "less than or equal to" in message, response.text
        for body, field in (
            ({"name": "has space", "template": "web"}, "name"),
            ({"name": "ok", "template": "web", "parameters": {"repo": "a\u0000b"}}, "parameters"),
            ({"name": "ok", "template": "web", "parameters": {"repo": {"nested": 1}}}, "parameters.repo"),
            ({"template": "web"}, "name"),
        ):
            response = await client.post(f"{API}/workspaces", json=body)
            assert response.status_code == 400, (body, response.text)
            assert any(p["field"].startswith(field) for p in response.json()["detail"]), response.json()

        missing = await client.post(f"{API}/workspaces", json={"name": "ws", "template": "web"})
        assert missing.status_code == 400
        assert missing.json()["message"] == "parameter `repo`: is required"
        assert missing.json()["detail"] == {"transient": False}
        wrong = await client.post(
            f"{API}/workspaces",
            json={"name": "ws", "template": "web", "parameters": {"repo": "r", "size": "huge"}},
        )
        assert wrong.status_code == 400 and "parameter `size`" in wrong.json()["message"]
        unknown = await client.post(
            f"{API}/workspaces",
            json={"name": "ws", "template": "web", "parameters": {"repo": "r", "colour": "red"}},
        )
        assert unknown.status_code == 400 and "parameter `colour`" in unknown.json()["message"]
        no_preset = await client.post(
            f"{API}/workspaces", json={"name": "ws", "template": "web", "preset": "nope"}
        )
        assert no_preset.status_code == 400 and "presets: web" in no_preset.json()["message"]
        assert (
            await client.post(f"{API}/workspaces", json={"name": "ws", "template": "nope"})
        ).status_code == 404

        ok = await client.post(
            f"{API}/workspaces", json={"name": "ws", "template": "web", "parameters": {"repo": "r"}}
        )
        assert ok.status_code == 201, ok.text
        taken = await client.post(
            f"{API}/workspaces", json={"name": "WS", "template": "web", "parameters": {"repo": "r"}}
        )
        assert taken.status_code == 409 and "already exists" in taken.json()["message"]
        assert (await client.get(f"{API}/workspaces/not-a-uuid")).status_code == 400


async def test_a_pending_import_is_a_406_and_jobs_say_why_they_wait(
    idle_server: RunningServer, tmp_path: Path
) -> None:
    async with idle_server.client() as client:
        pushed = await push(client, tmp_path, "web", EXEC_MANIFEST, EXEC_FILES)
        assert pushed.status_code == 201
        creating = await client.post(
            f"{API}/workspaces", json={"name": "ws", "template": "web", "parameters": {"repo": "r"}}
        )
        assert creating.status_code == 406, creating.text
        assert "still importing" in creating.json()["message"]
        assert creating.json()["detail"] == {"transient": True}
        activating = await client.patch(f"{API}/templates/web", json={"active_version": "v1"})
        assert activating.status_code == 406 and "still importing" in activating.json()["message"]
        assert (await client.get(f"{API}/templates/web/presets")).json() == []

        jobs = (await client.get(f"{API}/jobs", params={"status": "pending"})).json()
        assert [(j["id"], j["type"], j["waiting_reason"]) for j in jobs] == [
            (pushed.json()["job_id"], "template_version_import", "no provisioner for kind exec")
        ]
        assert (await client.get(f"{API}/jobs", params={"status": "running"})).json() == []
        assert (await client.get(f"{API}/jobs", params={"status": "lost"})).status_code == 400

        canceled = await client.post(f"{API}/jobs/{pushed.json()['job_id']}/cancel")
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
        assert canceled.json()["waiting_reason"] is None
        again = await client.post(f"{API}/jobs/{pushed.json()['job_id']}/cancel")
        assert again.status_code == 409 and "already finished" in again.json()["message"]
        version = (await client.get(f"{API}/templates/web/versions/v1")).json()
        assert version["import_status"] == "canceled"
        after_cancel = await client.post(
            f"{API}/workspaces", json={"name": "ws", "template": "web", "parameters": {"repo": "r"}}
        )
        assert after_cancel.status_code == 400 and "no active version" in after_cancel.json()["message"]


async def test_roles_are_enforced_with_403s(running_server: RunningServer, tmp_path: Path) -> None:
    member = await user_with_token(running_server, "alice")
    admin = await user_with_token(running_server, "tadmin", role="template-admin")
    async with running_server.client(member) as client:
        pushed = await push(client, tmp_path, "web", EXEC_MANIFEST, EXEC_FILES)
        assert pushed.status_code == 403 and "template-admin" in pushed.json()["message"]
        assert (await client.put(f"{API}/settings", json={"reconciliation_paused": True})).status_code == 403
        assert (await client.get(f"{API}/settings")).json() == {"reconciliation_paused": False}
        assert (await client.get(f"{API}/jobs")).status_code == 403
        assert (await client.get(f"{API}/users")).status_code == 403
        assert (await client.post(f"{API}/users", json={"username": "eve"})).status_code == 403
        assert (
            await client.post(f"{API}/tokens", json={"name": "t", "username": "admin"})
        ).status_code == 403
    async with running_server.client(admin) as client:
        assert (await push(client, tmp_path, "web", EXEC_MANIFEST, EXEC_FILES)).status_code == 201
        assert (await client.get(f"{API}/users")).status_code == 200
        assert (await client.put(f"{API}/settings", json={"reconciliation_paused": True})).status_code == 403
        assert (await client.patch(f"{API}/users/alice", json={"role": "owner"})).status_code == 403

    kicks: list[str] = []
    assert running_server.server.services is not None
    running_server.server.services.kick_hooks.append(kicks.append)
    async with running_server.client() as owner:
        paused = await owner.put(f"{API}/settings", json={"reconciliation_paused": True})
        assert paused.status_code == 200 and paused.json() == {"reconciliation_paused": True}
        assert (await owner.get(f"{API}/settings")).json() == {"reconciliation_paused": True}
        assert kicks == ["pause"]


async def test_missing_invalid_and_revoked_tokens_are_401s(running_server: RunningServer) -> None:
    async with running_server.client() as owner:
        created = await owner.post(f"{API}/tokens", json={"name": "short-lived"})
        token = created.json()
    for header in (
        {},
        {"Authorization": "Bearer pbt_not-a-real-token"},
        {"Authorization": "Basic YWRtaW46eA=="},
    ):
        async with running_server.client() as client:
            client.headers.pop("Authorization")
            response = await client.get(f"{API}/workspaces", headers=header)
            assert response.status_code == 401, (header, response.text)
            assert response.json()["detail"] is None and response.json()["message"]
    async with running_server.client(token["secret"]) as client:
        assert (await client.get(f"{API}/users/me")).status_code == 200
        assert (await client.delete(f"{API}/tokens/{token['token']['id']}")).status_code == 204
        refused = await client.get(f"{API}/users/me")
        assert refused.status_code == 401 and "revoked" in refused.json()["message"]
