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
