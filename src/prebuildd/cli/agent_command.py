"""`prebuildd agent`: runs inside a workspace, reports its lifecycle and re-initialises once per claim."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Annotated, Any

import httpx
import typer


class _Stop(Exception):
    pass


def _call(client: httpx.Client, method: str, path: str, **kw: Any) -> dict[str, Any]:
    response = client.request(method, path, **kw)
    if response.status_code == 401:
        raise _Stop("the server refused the agent token (the workspace was deleted, or the token replaced)")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _run_hook(command: str, env: dict[str, str]) -> int:
    return subprocess.run(command, shell=True, env={**os.environ, **env}, check=False).returncode


def _say(message: str) -> None:
    print(f"prebuildd-agent: {message}", flush=True)


def register(app: typer.Typer) -> None:
    @app.command("agent")
    def agent(
        url: Annotated[str, typer.Option(envvar="PREBUILDD_ACCESS_URL", help="The server's access URL.")],
        token: Annotated[str, typer.Option(envvar="PREBUILDD_AGENT_TOKEN", help="This agent's token.")],
        startup: Annotated[
            str | None, typer.Option(help="Shell command to run before reporting ready.")
        ] = None,
        on_claim: Annotated[
            str | None,
            typer.Option(
                help="Shell command run once per claim, with PREBUILDD_CLAIM_OWNER and "
                "PREBUILDD_CLAIM_WORKSPACE set."
            ),
        ] = None,
        poll: Annotated[float, typer.Option(help="Long-poll duration in seconds.")] = 30.0,
    ) -> None:
        """Report starting → ready (or start_error), then wait for claims until the workspace is deleted."""
        headers = {"Authorization": f"Bearer {token}"}
        try:
            with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=poll + 15) as client:
                _agent_loop(client, startup, on_claim, poll)
        except _Stop as stop:
            _say(f"stopping: {stop}")
        except KeyboardInterrupt:
            _say("interrupted")


def _agent_loop(client: httpx.Client, startup: str | None, on_claim: str | None, poll: float) -> None:
    me = _retrying(lambda: _call(client, "POST", "/api/v1/agent/lifecycle", json={"state": "starting"}))
    _say(f"starting in workspace {me['workspace_name']} (agent {me['agent']})")
    if startup and (code := _run_hook(startup, {})) != 0:
        _call(client, "POST", "/api/v1/agent/lifecycle", json={"state": "start_error"})
        _say(f"startup command exited with status {code}: reported start_error")
        sys.exit(1)
    me = _retrying(lambda: _call(client, "POST", "/api/v1/agent/lifecycle", json={"state": "ready"}))
    _say("ready")
    # A workspace that already belongs to someone has nothing to re-initialise for its past claim.
    handled = None if me["is_prebuild"] else me["claimed_at"]
    while True:
        params = {"wait": poll, **({"after": handled} if handled else {})}
        claim = _retrying(lambda p=params: _call(client, "GET", "/api/v1/agent/claim", params=p))
        if not claim["claimed"]:
            continue
        handled = claim["claimed_at"]
        _say(f"claimed by {claim['owner']} as {claim['workspace_name']}")
        if on_claim:
            code = _run_hook(
                on_claim,
                {
                    "PREBUILDD_CLAIM_OWNER": claim["owner"],
                    "PREBUILDD_CLAIM_WORKSPACE": claim["workspace_name"],
                },
            )
            if code != 0:
                _say(f"claim hook exited with status {code}")


def _retrying(call: Any) -> dict[str, Any]:
    """Retry transient network and server errors with a growing pause; a refused token stops the agent."""
    pause = 0.5
    while True:
        try:
            result: dict[str, Any] = call()
            return result
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            _say(f"server unreachable ({exc}); retrying in {pause:.1f}s")
            time.sleep(pause)
            pause = min(pause * 2, 10.0)
