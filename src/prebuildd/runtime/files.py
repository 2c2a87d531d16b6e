"""Private directories: the data directory, job scratch and workspace directories are 0700 (owner only).

Job directories hold template files, state and parameter values; workspace directories what the scripts
keep; the data directory the database password, the owner token and PostgreSQL's log. ``private_dir``
creates a directory 0700 and tightens one that exists with a looser mode (an install from before).
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SHARED_DATA_DIR = 0o710
"""The data directory as root with the embedded PostgreSQL: its system user's group may pass through it (to
PGDATA, the log and the binaries), not list it (``server/embedded_pg.py``). Left as it is by ``private_dir``."""


def private_dir(path: Path) -> Path:
    """``path`` created and set to 0700; the parents it creates are 0700 too (existing ones are left)."""
    missing = []
    for parent in (path, *path.parents):
        if parent.exists():
            break
        missing.append(parent)
    for directory in reversed(missing):
        directory.mkdir(mode=PRIVATE_DIR, exist_ok=True)  # another process may create it at the same time
        os.chmod(directory, PRIVATE_DIR)  # mkdir's mode is filtered by the umask
    if path.stat().st_mode & 0o777 not in (PRIVATE_DIR, SHARED_DATA_DIR):
        os.chmod(path, PRIVATE_DIR)
    return path
