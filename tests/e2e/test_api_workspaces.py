"""Templates and workspaces over real HTTP: push, import, create with parameters, logs (plain and followed), stop,
start, delete; and who may see which workspace."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.api import API, push, user_with_token, wait_build, wait_imported
from tests.support.server import RunningServer
from tests.support.templates import BLOCKING_MANIFEST, EXEC_FILES, EXEC_MANIFEST, blocking_files

WITH_START = EXEC_MANIFEST.replace('stop = "stop.sh"', 'start = "start.sh"\nstop = "stop.sh"')
WITH_START_FILES = {**EXEC_FILES, "start.sh": '#!/bin/sh\necho "starting $PREBUILDD_PARAM_REPO again"\n'}


async def test_a_workspace_lives_from_push_to_delete(running_server: RunningServer, tmp_path: Path) -> None:
    async with running_server.client() as client:
        pushed = await push(client, tmp_path, "web", WITH_START, WITH_START_FILES, message="first")
        assert pushed.status_code == 201, pushed.text
        assert pushed.json()["created_template"] is True and pushed.json()["version"] == "v1"
        version = await wait_imported(client, "web", "v1")
        assert version["import_status"] == "succeeded", version["import_error"]
        assert version["active"] is True and version["message"] == "first"
        assert [p["name"] for p in version["parameters"]] == ["repo", "size", "cpu"]

        templates = (await client.get(f"{API}/templates")).json()
        assert [(t["name"], t["active_version"]) for t in templates] == [("web", "v1")]
        presets = (await client.get(f"{API}/templates/web/presets")).json()
        assert [(p["name"], p["parameters"]["size"]) for p in presets] == [("web", "large")]
        import_logs = (await client.get(f"{API}/templates/web/versions/v1/logs")).json()
        assert import_logs and all(
            set(line) == {"id", "created_at", "level", "stage", "output"} for line in import_logs
        )

        created = await client.post(
            f"{API}/workspaces",
            json={
                "name": "dev",
                "template": "web",
                "parameters": {"repo": "https://example.com/app.git", "cpu": 4},
            },
        )
        assert created.status_code == 201, created.text
        workspace = created.json()
        assert workspace["owner"] == "admin" and workspace["template"] == "web"
        first = workspace["latest_build"]
        assert first["build_number"] == 1 and first["transition"] == "start" and first["version"] == "v1"
        assert first["parameters"] == {"repo": "https://example.com/app.git", "size": "small", "cpu": "4"}

        built = await wait_build(client, workspace["id"], 1)
        assert built["status"] == "succeeded", built["error"]
        assert built["outputs"]["path"].endswith(workspace["id"])
        logs = (await client.get(f"{API}/builds/{built['id']}/logs")).json()
        assert any("cloning https://example.com/app.git (small, 4 cpu)" in line["output"] for line in logs)
        later = (await client.get(f"{API}/builds/{built['id']}/logs", params={"after": logs[0]["id"]})).json()
        assert later == logs[1:]

        # Following a finished build replays its lines and ends at once with its status.
        async with client.stream(
            "GET", f"{API}/builds/{built['id']}/logs", params={"follow": True}
        ) as stream:
            assert stream.headers["content-type"].startswith("application/x-ndjson")
            followed = [json.loads(line) async for line in stream.aiter_lines() if line]
        assert followed[-1] == {"end": True, "status": "succeeded"}
        assert [line["id"] for line in followed[:-1]] == [line["id"] for line in logs]

        for number, transition, expected in (
            (2, "stop", "stopping with state created-dev"),
            (3, "start", "starting https://example.com/app.git again"),
        ):
            response = await client.post(
                f"{API}/workspaces/{workspace['id']}/builds", json={"transition": transition}
            )
            assert response.status_code == 201, response.text
            assert response.json()["build_number"] == number
            build = await wait_build(client, workspace["id"], number)
            assert build["status"] == "succeeded", build["error"]
            assert build["parameters"]["cpu"] == "4"  # later builds keep the first build's values
            lines = (await client.get(f"{API}/builds/{build['id']}/logs")).json()
            assert any(expected in line["output"] for line in lines), lines

        listed = (await client.get(f"{API}/workspaces")).json()
        assert [(w["name"], w["latest_build"]["transition"]) for w in listed] == [("dev", "start")]

        deleted = await client.post(
            f"{API}/workspaces/{workspace['id']}/builds", json={"transition": "delete"}
        )
        assert deleted.status_code == 201, deleted.text
        assert (await wait_build(client, workspace["id"], 4))["status"] == "succeeded"
        gone = (await client.get(f"{API}/workspaces/{workspace['id']}")).json()
        assert gone["deleted"] is True
        assert (await client.get(f"{API}/workspaces")).json() == []
        history = (await client.get(f"{API}/workspaces/{workspace['id']}/builds")).json()
        assert [(b["build_number"], b["transition"]) for b in history] == [
            (4, "delete"),
            (3, "start"),
            (2, "stop"),
            (1, "start"),
        ]


async def test_follow_streams_lines_as_the_build_writes_them(
    running_server: RunningServer, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    async with running_server.client() as client:
        assert (
            await push(client, tmp_path, "slow", BLOCKING_MANIFEST, blocking_files(release))
        ).status_code == 201
        assert (await wait_imported(client, "slow", "v1"))["import_status"] == "succeeded"
        created = await client.post(f"{API}/workspaces", json={"name": "live", "template": "slow"})
        assert created.status_code == 201, created.text
        build = created.json()["latest_build"]

        # While the build is active, a second build of the workspace is refused.
        busy = await client.post(
            f"{API}/workspaces/{created.json()['id']}/builds", json={"transition": "stop"}
        )
        assert busy.status_code == 409 and "already has an active build" in busy.json()["message"]
        assert busy.json()["detail"] == {"transient": True}

        seen: list[dict[str, object]] = []
        async with client.stream(
            "GET", f"{API}/builds/{build['id']}/logs", params={"follow": True}
        ) as stream:
            async for line in stream.aiter_lines():
                if not line:
                    continue
                seen.append(json.loads(line))
                if seen[-1].get("output") == "started live":
                    # The job is still running (it waits for this file): what follows must arrive live.
                    status = (await client.get(f"{API}/workspaces/{created.json()['id']}")).json()
                    assert status["latest_build"]["status"] == "running"
                    release.touch()
                if seen[-1].get("end"):
                    break
        outputs = [entry.get("output") for entry in seen]
        assert outputs.index("started live") < outputs.index("finished live")
        assert seen[-1] == {"end": True, "status": "succeeded"}


async def test_members_see_only_their_own_workspaces(running_server: RunningServer, tmp_path: Path) -> None:
    alice = await user_with_token(running_server, "alice")
    bob = await user_with_token(running_server, "bob")
    async with running_server.client() as owner:
        assert (await push(owner, tmp_path, "web", EXEC_MANIFEST, EXEC_FILES)).status_code == 201
        assert (await wait_imported(owner, "web", "v1"))["import_status"] == "succeeded"
    async with running_server.client(alice) as client:
        created = await client.post(
            f"{API}/workspaces", json={"name": "mine", "template": "web", "preset": "web"}
        )
        assert created.status_code == 201, created.text
        workspace = created.json()
        assert workspace["owner"] == "alice"
        assert workspace["latest_build"]["preset"] == "web"
        assert workspace["latest_build"]["parameters"]["repo"] == "https://example.com/web.git"
        build = await wait_build(client, workspace["id"], 1)
        assert build["status"] == "succeeded", build["error"]

    async with running_server.client(bob) as client:
        for method, path, body in (
            ("GET", f"/workspaces/{workspace['id']}", None),
            ("GET", f"/workspaces/{workspace['id']}/builds", None),
            ("POST", f"/workspaces/{workspace['id']}/builds", {"transition": "delete"}),
            ("GET", f"/builds/{build['id']}/logs", None),
        ):
            response = await client.request(method, API + path, json=body)
            assert response.status_code == 404, (method, path, response.text)
            assert "not found" in response.json()["message"]
        assert (await client.get(f"{API}/workspaces")).json() == []
        refused = await client.get(f"{API}/workspaces", params={"owner": "alice"})
        assert refused.status_code == 403
        for_alice = await client.post(
            f"{API}/workspaces", json={"name": "x", "template": "web", "owner": "alice"}
        )
        assert for_alice.status_code == 403

    async with running_server.client() as owner:  # template admins and owners see everyone's
        assert (await owner.get(f"{API}/workspaces/{workspace['id']}")).status_code == 200
        everyone = (await owner.get(f"{API}/workspaces", params={"owner": "all"})).json()
        assert [(w["owner"], w["name"]) for w in everyone] == [("alice", "mine")]
        by_name = (await owner.get(f"{API}/workspaces", params={"owner": "alice", "name": "MINE"})).json()
        assert [w["id"] for w in by_name] == [workspace["id"]]
        for_bob = await owner.post(
            f"{API}/workspaces",
            json={"name": "given", "template": "web", "owner": "bob", "parameters": {"repo": "r"}},
        )
        assert for_bob.status_code == 201 and for_bob.json()["owner"] == "bob"


async def test_template_lifecycle_activate_deprecate_delete(
    running_server: RunningServer, tmp_path: Path
) -> None:
    kicks: list[str] = []
    assert running_server.server.services is not None
    running_server.server.services.kick_hooks.append(kicks.append)
    async with running_server.client() as client:
        assert (await push(client, tmp_path, "app", EXEC_MANIFEST, EXEC_FILES)).status_code == 201
        assert (await wait_imported(client, "app", "v1"))["import_status"] == "succeeded"
        broken_import = EXEC_MANIFEST.replace('create = "create.sh"', 'create = "missing.sh"')
        second = await push(client, tmp_path, "app", broken_import, EXEC_FILES)
        assert second.status_code == 201 and second.json()["created_template"] is False
        failed = await wait_imported(client, "app", "v2")
        assert failed["import_status"] == "failed" and failed["active"] is False
        refused = await client.patch(f"{API}/templates/app", json={"active_version": "v2"})
        assert refused.status_code == 400 and "v2" in refused.json()["message"]
        assert (await client.patch(f"{API}/templates/app", json={"active_version": "v9"})).status_code == 404

        assert (await push(client, tmp_path, "app", EXEC_MANIFEST, EXEC_FILES)).status_code == 201
        assert (await wait_imported(client, "app", "v3"))["import_status"] == "succeeded"
        assert (await client.get(f"{API}/templates/app")).json()["active_version"] == "v1"
        activated = await client.patch(f"{API}/templates/app", json={"active_version": "v3"})
        assert activated.status_code == 200 and activated.json()["active_version"] == "v3"
        assert "new active version" in kicks
        versions = (await client.get(f"{API}/templates/app/versions")).json()
        assert [(v["name"], v["active"]) for v in versions] == [("v3", True), ("v2", False), ("v1", False)]
        old_presets = (await client.get(f"{API}/templates/app/presets", params={"version": "v1"})).json()
        assert [p["version"] for p in old_presets] == ["v1"]

        deprecated = await client.patch(
            f"{API}/templates/app", json={"deprecated": True, "deprecation_message": "use web2"}
        )
        assert (
            deprecated.json()["deprecated"] is True and deprecated.json()["deprecation_message"] == "use web2"
        )
        refused = await client.post(
            f"{API}/workspaces", json={"name": "late", "template": "app", "parameters": {"repo": "r"}}
        )
        assert refused.status_code == 400 and "use web2" in refused.json()["message"]
        lifted = await client.patch(f"{API}/templates/app", json={"deprecated": False})
        assert lifted.json()["deprecated"] is False and lifted.json()["deprecation_message"] is None

        created = await client.post(
            f"{API}/workspaces", json={"name": "keep", "template": "app", "parameters": {"repo": "r"}}
        )
        assert created.status_code == 201, created.text
        blocked = await client.delete(f"{API}/templates/app")
        assert blocked.status_code == 409 and "admin/keep" in blocked.json()["message"]
        await wait_build(client, created.json()["id"], 1)
        delete = await client.post(
            f"{API}/workspaces/{created.json()['id']}/builds", json={"transition": "delete"}
        )
        assert delete.status_code == 201
        await wait_build(client, created.json()["id"], 2)
        assert (await client.delete(f"{API}/templates/app")).status_code == 204
        assert "template deleted" in kicks
        assert (await client.get(f"{API}/templates/app")).status_code == 404
        assert (await client.get(f"{API}/templates")).json() == []
        # The name is free again: a new push starts a new template.
        again = await push(client, tmp_path, "app", EXEC_MANIFEST, EXEC_FILES)
        assert again.status_code == 201 and again.json()["created_template"] is True
