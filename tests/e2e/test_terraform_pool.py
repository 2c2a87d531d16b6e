"""A pool on the Terraform example (examples/terraform-local) with real Terraform and real workspace agents:
the pool converges (agents report ready), a claim hands one over and runs the example's claim build as the new
owner (from the prebuild's state, with the editor given at claim time), the agent runs its claim hook, the pool
refills. Skips where Terraform is absent, fails so under CI=true."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.identity.users import create_user, ensure_default_organization
from prebuildd.prebuilds.claim import CreateRequest
from prebuildd.store.rows import fetch_one
from prebuildd.templates.archive import pack_directory
from tests.support.pools import creator
from tests.support.server import RunningServer, start_server
from tests.support.terraform import require_terraform
from tests.support.waiting import wait_for

EXAMPLE = Path(__file__).parents[2] / "examples" / "terraform-local"
ACTIVE = ("pending", "running", "canceling")


def resources(state: bytes) -> dict[str, str]:
    """Resource address → id, from a Terraform state file."""
    found = {}
    for r in json.loads(state)["resources"]:
        for i, instance in enumerate(r["instances"]):
            address = f"{r['type']}.{r['name']}" + (f"[{i}]" if "index_key" in instance else "")
            found[address] = instance["attributes"]["id"]
    return found


@pytest.fixture
def agent_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`prebuildd` on PATH for the agents the example starts, whatever way this interpreter was installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "prebuildd"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m prebuildd "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("TF_PLUGIN_CACHE_DIR", str(tmp_path / "plugin-cache"))


def stop_agents(data_dir: Path) -> None:
    """End the agent supervisors the example started (each leads its own process group)."""
    for pid_file in data_dir.glob("workspaces/*/.agent/supervisor.pid"):
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)


async def status(running: RunningServer) -> dict[str, dict[str, object]]:
    async with running.client() as client:
        response = await client.get("/api/v1/prebuilds/status")
        assert response.status_code == 200, response.text
        return {p["preset"]: p for p in response.json()["presets"]}


async def test_a_terraform_pool_converges_and_a_claim_hands_one_over(
    database_url: str, tmp_path: Path, agent_path: None
) -> None:
    require_terraform()
    data_dir = tmp_path / "server"
    running = await start_server(database_url, data_dir, reconcile_interval=0.5)
    try:
        async with running.client() as client:
            pushed = await client.post(
                "/api/v1/templates/workspace/versions",
                params={"activate": True},
                content=pack_directory(EXAMPLE),
                headers={"Content-Type": "application/gzip"},
            )
            assert pushed.status_code == 201, pushed.text

        async def two_ready() -> bool:
            hello = (await status(running)).get("hello")
            return bool(hello and hello["eligible"] == 2 and hello["starting"] == 0)

        await wait_for(two_ready, timeout=120, what="2 prebuilds of `hello` with ready agents")
        hello = (await status(running))["hello"]
        assert hello["status"] == "healthy" and hello["desired"] == 2 and hello["failed"] == 0

        services = running.server.services
        assert services is not None
        org = await ensure_default_organization(services.db, services.clock)
        alice = await create_user(services.db, services.clock, username="alice")
        async with services.db.transaction() as conn:
            template = await fetch_one(
                conn, "templates.template_by_name", {"organization_id": org.id, "name": "workspace"}
            )
        assert template is not None
        created = await creator(services).create_workspace(
            CreateRequest(
                organization_id=org.id,
                owner_id=alice.id,
                initiator_id=alice.id,
                template_id=template["id"],
                name="mine",
                preset_id=UUID(str(hello["preset_id"])),
                parameters={"editor": "emacs"},  # mutable: still a claim, and the claim build applies it
            ),
        )
        assert created.claimed and created.build is not None, "claim_build = true: a claim build runs"
        async with services.db.transaction() as conn:
            workspace = await fetch_one(conn, "workspaces.workspace_by_id", {"id": created.workspace_id})
        assert workspace is not None
        assert workspace["owner_id"] == alice.id and workspace["owner_id"] != PREBUILDS_USER_ID

        # The claim build: reason `claim`, applied as alice with her editor, from the prebuild's state.
        found: list[dict[str, Any]] = []

        async def claim_build_done() -> bool:
            async with running.client() as client:
                response = await client.get(f"/api/v1/workspaces/{created.workspace_id}/builds")
            assert response.status_code == 200, response.text
            found[:] = [b for b in response.json() if b["reason"] == "claim" and b["status"] not in ACTIVE]
            return bool(found)

        await wait_for(claim_build_done, timeout=120, what="the claim build")
        [build] = found
        assert build["status"] == "succeeded", build["error"]
        assert build["outputs"]["owner"] == "alice" and build["outputs"]["editor"] == "emacs"
        assert build["parameters"]["editor"] == "emacs" and build["parameters"]["project"] == "hello"
        async with services.db.transaction() as conn:
            cur = await conn.execute(
                "SELECT state FROM workspace_builds WHERE workspace_id = %s ORDER BY build_number",
                (created.workspace_id,),
            )
            states = [row["state"] for row in await cur.fetchall()]
        prebuilt, claimed = (resources(state) for state in states)
        assert claimed["terraform_data.home"] == prebuilt["terraform_data.home"], "the state was carried over"
        assert claimed["terraform_data.agent[0]"] == prebuilt["terraform_data.agent[0]"]
        assert claimed["terraform_data.profile"] != prebuilt["terraform_data.profile"]

        # The prebuilt directory is the one the user gets, with alice's profile, and its agent learned of the claim.
        home = data_dir / "workspaces" / str(created.workspace_id) / "hello"
        assert (home / "README.md").read_text() == "# hello\n"
        assert (home / ".profile").read_text() == "owner=alice\nworkspace=mine\neditor=emacs\n"

        async def claim_hook_ran() -> bool:
            marker = home / ".claimed-by"
            return marker.exists() and marker.read_text().strip() == "alice"

        await wait_for(claim_hook_ran, timeout=60, what="the agent's claim hook")

        async def refilled() -> bool:
            hello = (await status(running))["hello"]
            return hello["eligible"] == 2 and hello["starting"] == 0

        await wait_for(refilled, timeout=120, what="the pool to replace the claimed prebuild")
    finally:
        await running.server.stop()
        stop_agents(data_dir)
