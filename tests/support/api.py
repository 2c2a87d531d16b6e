"""Helpers for the HTTP API tests: push a template directory, wait for imports and builds, make users."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx

from prebuildd.templates.archive import pack_directory
from tests.support.server import RunningServer
from tests.support.templates import write_template
from tests.support.waiting import wait_for

API = "/api/v1"
FINISHED = ("succeeded", "failed", "canceled")


async def push(
    client: httpx.AsyncClient,
    tmp: Path,
    name: str,
    manifest: str,
    files: dict[str, str] | None = None,
    **params: Any,
) -> httpx.Response:
    directory = write_template(tmp / f"template-{name}-{uuid4().hex[:8]}", manifest, files)
    return await client.post(
        f"{API}/templates/{name}/versions",
        params=params,
        content=pack_directory(directory),
        headers={"Content-Type": "application/gzip"},
    )


async def wait_imported(client: httpx.AsyncClient, template: str, version: str) -> dict[str, Any]:
    """The version once its import job has finished (whatever the outcome)."""
    found: dict[str, Any] = {}

    async def finished() -> bool:
        response = await client.get(f"{API}/templates/{template}/versions/{version}")
        assert response.status_code == 200, response.text
        found.update(response.json())
        return found["import_status"] in FINISHED

    await wait_for(finished, timeout=60, what=f"the import of {template} {version}")
    return found


async def wait_build(client: httpx.AsyncClient, workspace_id: str, build_number: int) -> dict[str, Any]:
    """Build ``build_number`` of a workspace once its job has finished."""
    found: dict[str, Any] = {}

    async def finished() -> bool:
        response = await client.get(f"{API}/workspaces/{workspace_id}/builds")
        assert response.status_code == 200, response.text
        builds = {b["build_number"]: b for b in response.json()}
        found.update(builds.get(build_number, {}))
        return found.get("status") in FINISHED

    await wait_for(finished, timeout=60, what=f"build #{build_number} of {workspace_id}")
    return found


async def user_with_token(running: RunningServer, username: str, role: str = "member") -> str:
    """Create a user through the API (as the owner) and return a token for them."""
    async with running.client() as owner:
        created = await owner.post(f"{API}/users", json={"username": username, "role": role})
        assert created.status_code == 201, created.text
        token = await owner.post(f"{API}/tokens", json={"name": "test", "username": username})
        assert token.status_code == 201, token.text
    secret: str = token.json()["secret"]
    return secret
