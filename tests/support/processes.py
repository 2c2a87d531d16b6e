"""Whether a process is gone, for the tests that check a cancel kills a script or terraform and its children."""

from __future__ import annotations

import os
from pathlib import Path


def process_gone(pid: int) -> bool:
    """No such process, or a zombie (this machine's init may never reap orphans)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].split()[0] in ("Z", "X")


def processes_in(directory: Path) -> list[int]:
    """Live processes whose working directory is ``directory`` (a PostgreSQL server's postmaster and backends
    all run in its data directory)."""
    target = directory.resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) != target:
                continue
        except OSError:
            continue
        if not process_gone(int(entry.name)):
            found.append(int(entry.name))
    return found
