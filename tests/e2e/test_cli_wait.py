"""`--wait` says why a job waits: a real server with no embedded daemon, a standalone daemon that comes and goes,
and the CLI as a real process without a terminal (stdout and stderr are pipes)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.support.api import user_with_token
from tests.support.cli import Cli
from tests.support.daemons import DaemonProcess, start_daemon
from tests.support.server import RunningServer
from tests.support.templates import write_template

TEMPLATE = """
provisioner = "exec"
[exec]
create = "create.sh"
delete = "delete.sh"
"""
FILES = {
    "create.sh": '#!/bin/sh\necho "workspace $PREBUILDD_WORKSPACE_NAME ready"\n',
    "delete.sh": "#!/bin/sh\necho removed\n",
}
REASON = "waiting: no provisioner for kind exec"


async def _daemon(cli: Cli, running: RunningServer, work: Path, name: str) -> DaemonProcess:
    key = (await cli.ok("provisioner", "keys", "create", name)).out.strip()
    return await start_daemon(running.url, key, work)


async def test_wait_prints_the_waiting_reason_and_gives_up_at_the_timeout(
    idle_server: RunningServer, tmp_path: Path
) -> None:
    cli = Cli(
        tmp_path / "config", {"PREBUILDD_URL": idle_server.url, "PREBUILDD_TOKEN": idle_server.owner_token}
    )
    directory = write_template(tmp_path / "tiny", TEMPLATE, FILES)

    # no daemon at all: the import waits, and says why, until --timeout
    pushed = await cli("templates", "push", "tiny", str(directory), "--activate", "--timeout", "2s")
    assert pushed.code == 124, pushed
    assert pushed.err.count(REASON) == 1, f"said once, not once per poll: {pushed}"
    assert "error: gave up waiting for the import of tiny v1 after 2s (--timeout)" in pushed.err, pushed

    # a daemon takes the import (and says nothing about waiting once it runs)
    daemon = await _daemon(cli, idle_server, tmp_path / "daemon-1", "builder-1")
    try:
        imported = await cli("templates", "versions", "tiny", "--json")
        assert imported.code == 0, imported
        created = await cli("workspaces", "create", "first", "-t", "tiny", "--wait", "--timeout", "60s")
        assert created.code == 0, created
        assert "workspace first ready" in created.out
        assert "waiting:" not in created.err, created
    finally:
        await daemon.kill()

    # the daemon is gone: the build waits with its reason, then the wait gives up (the build stays queued)
    waited = await cli("workspaces", "create", "second", "-t", "tiny", "--wait", "--timeout", "2s")
    assert waited.code == 124, waited
    assert waited.err.count(REASON) == 1, waited
    assert "gave up waiting for build #1 after 2s (--timeout)" in waited.err
    assert "the build goes on" in waited.err
    assert all(line.startswith(("Created", "waiting:", "error:")) for line in waited.err.splitlines()), waited

    # what --wait reads: the job with its reason, for whoever started it and template admins only
    async with idle_server.client() as owner:
        [pending] = (await owner.get("/api/v1/jobs", params={"status": "pending"})).json()
        job = await owner.get(f"/api/v1/jobs/{pending['id']}")
        assert job.status_code == 200 and job.json()["waiting_reason"] == "no provisioner for kind exec"
    member = await user_with_token(idle_server, "member-1")
    async with idle_server.client(member) as other:
        hidden = await other.get(f"/api/v1/jobs/{pending['id']}")
        assert hidden.status_code == 404 and hidden.json()["code"] == "not_found"


async def test_wait_says_when_the_job_starts_after_waiting(
    idle_server: RunningServer, tmp_path: Path
) -> None:
    cli = Cli(
        tmp_path / "config", {"PREBUILDD_URL": idle_server.url, "PREBUILDD_TOKEN": idle_server.owner_token}
    )
    directory = write_template(tmp_path / "tiny", TEMPLATE, FILES)
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("PREBUILDD_")},
        **cli.env,
        "PREBUILDD_CONFIG_DIR": str(cli.config_dir),
    }
    # the CLI waits in the background; the daemon starts only once the CLI has said why it waits
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "prebuildd",
        "templates",
        "push",
        "tiny",
        str(directory),
        "--activate",
        "--timeout",
        "60s",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    daemon: DaemonProcess | None = None
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        while REASON not in seen:
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, f"the CLI ended before saying why it waits: {seen}"
            seen.append(line.decode().rstrip("\n"))
        daemon = await _daemon(cli, idle_server, tmp_path / "daemon", "builder")
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
        lines = [*seen, *err.decode().splitlines()]
        assert proc.returncode == 0, lines
        assert lines.index(REASON) < lines.index("job started"), lines
        assert any("imported in" in line for line in lines), lines
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if daemon is not None:
            await daemon.kill()
