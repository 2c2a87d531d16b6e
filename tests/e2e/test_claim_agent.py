"""Claims end to end: prebuilds whose real `prebuildd agent` reports ready, a claim through the CLI that starts no
job, the agent told of its claim exactly once, and the pool refilled by the claim's kick alone."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.server.process import OWNER_TOKEN_FILE
from tests.support.cli import Cli
from tests.support.server import RunningServer, start_server
from tests.support.templates import write_template
from tests.support.waiting import wait_for

AGENT_TEMPLATE = """
provisioner = "exec"
agents = ["main"]
[exec]
create = "create.sh"
delete = "delete.sh"
[[presets]]
name = "warm"
[presets.prebuilds]
instances = 2
"""
# The agent is detached with setsid: it outlives the create script, as a workspace's agent does.
FILES = {
    "create.sh": """#!/bin/sh
set -eu
mkdir -p "$PREBUILDD_DATA_DIR"
cd "$PREBUILDD_DATA_DIR"
setsid prebuildd agent --poll 5 \\
    --on-claim 'echo "$PREBUILDD_CLAIM_OWNER $PREBUILDD_CLAIM_WORKSPACE" >> claims' \\
    > agent.log 2>&1 < /dev/null &
echo $! > agent.pid
echo "$PREBUILDD_AGENT_TOKEN" > agent.token
# Exit only once the agent is running in its own session: what is left in the script's process group when it
# exits is killed, and a background child may not have reached setsid yet.
i=0
while [ ! -s agent.log ] && [ "$i" -lt 200 ]; do i=$((i + 1)); sleep 0.05; done
echo "agent started"
""",
    "delete.sh": """#!/bin/sh
cd "$PREBUILDD_DATA_DIR" 2>/dev/null || exit 0
[ -f agent.pid ] && kill "$(cat agent.pid)" 2>/dev/null || true
echo "agent stopped"
""",
}


@pytest.fixture
def agent_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workspace scripts run `prebuildd agent`: the test's interpreter's scripts must be on PATH."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def _agent_token(data_dir: Path) -> str:
    """The token the create script handed to the agent (it records it for this test)."""
    return (data_dir / "agent.token").read_text().strip()


def _kill_agents(data_dir: Path) -> None:
    for pid_file in data_dir.glob("workspaces/*/agent.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


async def test_claim_hands_over_a_ready_prebuild_and_the_pool_refills(
    database_url: str, tmp_path: Path, agent_path: None
) -> None:
    running: RunningServer = await start_server(database_url, tmp_path / "server", reconcile_interval=3600.0)
    headers = {"Authorization": f"Bearer {running.owner_token}"}
    try:
        async with httpx.AsyncClient(base_url=running.url, headers=headers, timeout=30) as api:
            cli = Cli(tmp_path / "cli")
            await cli.ok("login", running.url, "--token-file", str(running.data_dir / OWNER_TOKEN_FILE))
            await cli.ok(
                "templates",
                "push",
                "agented",
                str(write_template(tmp_path / "t", AGENT_TEMPLATE, FILES)),
                "--activate",
            )

            async def eligible(n: int) -> bool:
                status = (await api.get("/api/v1/prebuilds/status")).json()
                warm = [p for p in status["presets"] if p["preset"] == "warm"]
                return bool(warm and warm[0]["eligible"] == n and warm[0]["running"] == n)

            await wait_for(lambda: eligible(2), timeout=60, what="2 prebuilds whose agents report ready")
            jobs_before = len((await api.get("/api/v1/jobs", params={"limit": 1000})).json())

            created = await cli.ok(
                "workspaces", "create", "mine", "--template", "agented", "--preset", "warm", "--json"
            )
            workspace = created.json()
            assert workspace["claimed"] is True and workspace["owner"] == "admin"
            assert workspace["latest_build"]["build_number"] == 1  # the prebuild's own build: no new job
            data_dir = running.data_dir / "workspaces" / workspace["id"]

            async def told_once() -> bool:
                claims = data_dir / "claims"
                return claims.exists() and claims.read_text().splitlines() == ["admin mine"]

            await wait_for(told_once, timeout=30, what="the agent to see its claim")
            # The interval is an hour: only the claim's kick can bring the pool back to 2.
            await wait_for(lambda: eligible(2), timeout=60, what="the pool to refill after the claim")
            jobs = (await api.get("/api/v1/jobs", params={"limit": 1000})).json()
            new_jobs = jobs[: len(jobs) - jobs_before]
            assert [j["type"] for j in new_jobs] == ["workspace_build"]  # only the replacement prebuild
            assert all(j["priority"] > 0 for j in new_jobs)  # a prebuild job, not the user's
            # Told exactly once, even after more long polls.
            listed = (await api.get("/api/v1/workspaces", params={"owner": "all"})).json()
            assert len([w for w in listed if w["owner_id"] == str(PREBUILDS_USER_ID)]) == 2
            assert (data_dir / "claims").read_text().splitlines() == ["admin mine"]

            # Agent tokens are scoped to their workspace: once it is deleted, its agent is refused and stops.
            token_env = {"Authorization": "Bearer " + _agent_token(data_dir)}
            async with httpx.AsyncClient(base_url=running.url, headers=token_env) as agent_api:
                me = await agent_api.get("/api/v1/agent/me")
                assert me.status_code == 200 and me.json()["workspace_name"] == "mine"
                assert (await agent_api.get("/api/v1/users/me")).status_code == 401  # nothing else
                await cli.ok("workspaces", "delete", "mine", "--wait")
                assert (await agent_api.get("/api/v1/agent/me")).status_code == 401
    finally:
        _kill_agents(running.data_dir)
        await running.server.stop()
