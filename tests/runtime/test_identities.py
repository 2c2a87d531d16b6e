"""Stable identities: created once in their file, read back on every start, and never held by two live
processes at once (an exclusive flock that goes with its process, kill -9 included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prebuildd.runtime.config import ServerConfig
from prebuildd.runtime.identities import (
    DAEMON_IDENTITY_FILE,
    REPLICA_ID_FILE,
    IdentityInUse,
    hold_daemon_identity,
    hold_replica_id,
)

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from prebuildd.runtime.identities import hold_replica_id
    print(hold_replica_id(Path(sys.argv[1])).value, flush=True)
    time.sleep(600)
""")


def test_a_replica_id_is_created_once_and_read_back(tmp_path: Path) -> None:
    first = hold_replica_id(tmp_path / "a")
    assert (tmp_path / "a" / REPLICA_ID_FILE).read_text().strip() == first.value
    assert hold_replica_id(tmp_path / "a").value == first.value  # a restart finds the same id
    assert hold_replica_id(tmp_path / "b").value != first.value  # another installation, another id
    assert hold_replica_id(tmp_path / "a", "replica-7").value == "replica-7"  # --replica-id wins
    assert (tmp_path / "a" / REPLICA_ID_FILE).read_text().strip() == first.value  # and is not written


def test_a_daemon_identity_comes_from_its_name_once(tmp_path: Path) -> None:
    held = hold_daemon_identity(tmp_path, None, "build host #1")
    assert held.value.startswith("build-host-1-") and "#" not in held.value
    assert (tmp_path / DAEMON_IDENTITY_FILE).read_text().strip() == held.value
    assert hold_daemon_identity(tmp_path, None, "other").value == held.value
    with pytest.raises(ValueError, match="--identity"):
        hold_daemon_identity(tmp_path, "bad#identity", "x")


def test_the_replica_id_option_is_checked() -> None:
    with pytest.raises(ValueError, match="replica_id"):
        ServerConfig(replica_id="a/b")
    assert ServerConfig(replica_id="eu-1.a").replica_id == "eu-1.a"


def test_a_second_process_on_the_same_directory_is_refused_until_the_first_is_gone(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout is not None
        held = holder.stdout.readline().strip()
        assert held
        with pytest.raises(IdentityInUse, match=r"another running prebuildd server holds .*replica-id"):
            hold_replica_id(tmp_path)
        holder.send_signal(signal.SIGKILL)  # a crash: the lock goes with the process
        holder.wait(10)
        assert hold_replica_id(tmp_path).value == held  # the restart is the same replica
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
