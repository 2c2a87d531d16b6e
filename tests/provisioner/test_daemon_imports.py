"""The standalone daemon's command loads no database code: a daemon host needs no driver and no store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import prebuildd


def _imported_modules(*args: str) -> list[str]:
    src = str(Path(prebuildd.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "prebuildd", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    # importtime lines: "import time: self | cumulative | module" (indented by nesting depth).
    return [
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    ]


def test_provisioner_start_imports_no_store_and_no_psycopg() -> None:
    modules = _imported_modules("provisioner", "start", "--help")
    assert "prebuildd.provisioner.daemon" in modules  # the command really was loaded
    assert "prebuildd.queue.http" in modules
    assert [m for m in modules if m.split(".")[0] in ("psycopg", "psycopg_pool")] == []
    assert [m for m in modules if m == "prebuildd.store" or m.startswith("prebuildd.store.")] == []
    # Command groups load on demand: the daemon's command does not import the client commands or the server.
    assert [
        m for m in modules if m.startswith(("prebuildd.cli.cmd_", "prebuildd.server", "prebuildd.api"))
    ] == ["prebuildd.cli.cmd_auth"]


def test_the_root_help_still_lists_every_command() -> None:
    src = str(Path(prebuildd.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": src, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "prebuildd", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for command in (
        "server",
        "provisioner",
        "agent",
        "prebuilds",
        "templates",
        "workspaces",
        "jobs",
        "login",
    ):
        assert command in done.stdout, command
