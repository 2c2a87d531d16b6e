"""The CLI at 80 columns against a real server: a pool that keeps failing, a healthy one, and every list
command, each line checked to fit; the status says what holds the failing pool back and where its error is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from prebuildd.server.process import OWNER_TOKEN_FILE
from tests.support.cli import Cli
from tests.support.server import start_server
from tests.support.templates import write_template
from tests.support.waiting import wait_for

MANIFEST = """
provisioner = "exec"
display_name = "A template with a rather long name"
description = "One preset that builds, one whose create script fails with a long, multi-line error message"
[exec]
create = "create.sh"
delete = "delete.sh"

[[parameters]]
name = "fail"
type = "bool"
default = false

[[presets]]
name = "works-every-time"
[presets.prebuilds]
instances = 1

[[presets]]
name = "fails-every-time-with-a-long-name"
parameters = { fail = "true" }
[presets.prebuilds]
instances = 2
"""
FILES = {
    "create.sh": "#!/bin/sh\n"
    'if [ "$PREBUILDD_PARAM_FAIL" = "true" ]; then\n'
    "  echo 'fatal: could not read from the remote repository git@example.com:team/monorepo-of-everything.git"
    " (permission denied, publickey)' >&2\n"
    "  echo 'second line of the error' >&2\n"
    "  exit 128\n"
    "fi\n"
    "echo ready\n",
    "delete.sh": "#!/bin/sh\necho removed\n",
}
TEMPLATE = "platform-engineering-devbox"
WIDTH = 80


def _fits(out: str) -> None:
    wide = [line for line in out.splitlines() if len(line) > WIDTH]
    assert not wide, f"wider than {WIDTH} columns: {wide}"


async def test_status_and_list_commands_fit_80_columns(database_url: str, tmp_path: Path) -> None:
    running = await start_server(
        database_url, tmp_path / "server", reconcile_interval=0.5, backoff_interval=0.2
    )
    try:
        cli = Cli(tmp_path / "cli", {"COLUMNS": str(WIDTH)})
        await cli.ok("login", running.url, "--token-file", str(running.data_dir / OWNER_TOKEN_FILE))
        await cli.ok(
            "templates", "push", TEMPLATE, str(write_template(tmp_path / "t", MANIFEST, FILES)), "--activate"
        )
        headers = {"Authorization": f"Bearer {running.owner_token}"}
        async with httpx.AsyncClient(base_url=running.url, headers=headers, timeout=30) as api:

            async def presets() -> dict[str, dict[str, Any]]:
                answer = (await api.get("/api/v1/prebuilds/status")).json()["presets"]
                return {p["preset"]: p for p in answer}

            async def settled() -> bool:
                now = await presets()
                good, bad = now.get("works-every-time", {}), now.get("fails-every-time-with-a-long-name", {})
                return good.get("eligible") == 1 and bad.get("status") in ("backing_off", "hard_limited")

            await wait_for(settled, timeout=90, what="one pool full, the other held back by its failures")
            held = (await presets())["fails-every-time-with-a-long-name"]

        status = await cli.ok("prebuilds", "status")
        _fits(status.out)
        lines = status.out.splitlines()
        assert lines[0].split() == ["PRESET", "READY", "STARTING", "FAILED", "STATUS", "HIT", "NEXT"]
        word = {"backing_off": "backoff", "hard_limited": "limited"}[held["status"]]
        [row] = [line for line in lines[1:] if f" {word} " in line]
        assert "creating" not in row, f"a held pool is not 'creating': {row}"
        assert any(
            line.startswith("  last 3 creations failed: create.sh exited with status 128: fatal: could not")
            or line.startswith("  3 failed builds, last:")
            for line in lines
        ), lines
        assert "second line of the error" not in status.out, "the first line only"
        # the command is too long for one line: broken as a shell reads it, never cut
        at = lines.index(f"  prebuildd prebuilds explain {TEMPLATE} \\")
        assert lines[at + 1] == "      fails-every-time-with-a-long-name"
        assert "second line of the error" in (await cli.ok("prebuilds", "status", "--wide")).out
        explained = await cli.ok("prebuilds", "explain", TEMPLATE, "fails-every-time-with-a-long-name")
        assert "second line of the error" in explained.out

        await cli.ok(
            "users", "create", "someone-with-a-long-username", "--email", "someone@platform.example.com"
        )
        for args in (
            ["templates", "list"],
            ["templates", "versions", TEMPLATE],
            ["presets", "list", TEMPLATE],
            ["workspaces", "list", "--all"],
            ["jobs", "list"],
            ["users", "list"],
            ["tokens", "list"],
        ):
            listed = await cli.ok(*args)
            assert listed.out.strip(), f"{args}: nothing listed"
            _fits(listed.out)
    finally:
        await running.server.stop()
