"""Stable identities of this process: a server replica's id (``<data-dir>/replica-id``) and a standalone
daemon's identity (``<work-dir>/daemon-identity``), each read from its file or created there once.

A daemon's identity is what lets a restarted daemon fail its previous run's jobs at once, so two live processes
must never share one. Each file is held with an exclusive ``flock`` for the life of the process: a second process
on the same directory is refused with a message that says what to do, and the lock goes with the process however
it ends (kill -9 included), so a restart never finds it stale. Within one process the hold is shared (tests run
several servers in one process, one after the other, on one directory).
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

REPLICA_ID_FILE = "replica-id"
DAEMON_IDENTITY_FILE = "daemon-identity"

REPLICA_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
"""Letters, digits, '.', '_', '-' (at most 63): embedded daemons are ``<replica-id>/embedded-<i>``."""
DAEMON_IDENTITY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
"""As a replica id, plus ':' and '/' (at most 128); never '#' (it separates the run) nor '@'."""


class IdentityInUse(Exception):
    """Another live process holds this identity file."""


@dataclass(frozen=True)
class HeldIdentity:
    value: str
    path: Path


_held: dict[Path, int] = {}
"""Identity files this process holds (path -> locked descriptor), for the life of the process."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:40] or "prebuildd"


def _lock(path: Path, what: str, override: str) -> int:
    path = path.resolve()
    if path in _held:
        return _held[path]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise IdentityInUse(
            f"another running {what} holds {path}: two cannot share one identity (a restart of one would fail "
            f"the other's jobs). Stop it, or give this one its own directory or {override}"
        ) from None
    _held[path] = fd
    return fd


def _hold(
    path: Path, given: str | None, default: str, pattern: str, what: str, override: str
) -> HeldIdentity:
    fd = _lock(path, what, override)
    if given:
        value = given
    else:
        os.lseek(fd, 0, os.SEEK_SET)
        value = os.read(fd, 4096).decode("utf-8", "replace").strip()
        if not value:
            value = default
            os.ftruncate(fd, 0)
            os.write(fd, (value + "\n").encode())
            os.fsync(fd)
    if not re.match(pattern, value):
        source = override if given else str(path)
        raise ValueError(f"{source}: {value!r} is not a valid identity (expected {pattern})")
    return HeldIdentity(value, path)


def hold_replica_id(data_dir: Path, given: str | None = None) -> HeldIdentity:
    """This server's replica id: ``given`` (``--replica-id``), else the one in ``<data-dir>/replica-id``
    (created once: the host name and a random part). Raises ``IdentityInUse`` when another live server holds
    the data dir's file."""
    default = f"{_slug(socket.gethostname())}-{uuid.uuid4().hex[:8]}"
    return _hold(
        data_dir / REPLICA_ID_FILE, given, default, REPLICA_ID_PATTERN, "prebuildd server", "--replica-id"
    )


def hold_daemon_identity(work_dir: Path, given: str | None, name: str) -> HeldIdentity:
    """A standalone daemon's identity: ``given`` (``--identity``), else the one in
    ``<work-dir>/daemon-identity`` (created once from ``name`` and a random part)."""
    default = f"{_slug(name)}-{uuid.uuid4().hex[:8]}"
    return _hold(
        work_dir / DAEMON_IDENTITY_FILE,
        given,
        default,
        DAEMON_IDENTITY_PATTERN,
        "provisioner daemon",
        "--identity",
    )


WORKERS_DIR = "workers"


def hold_worker_identity(data_dir: Path, replica_id: str, index: int) -> HeldIdentity:
    """An API worker process's replica identity, ``<replica-id>-w<index>``, held in
    ``<data-dir>/workers/worker-<index>`` for the life of the worker: two live workers never share one, and a
    worker restarted after a crash takes its predecessor's (the lock went with the process)."""
    value = f"{replica_id[:58]}-w{index}"
    return _hold(
        data_dir / WORKERS_DIR / f"worker-{index}",
        value,
        value,
        REPLICA_ID_PATTERN,
        f"prebuildd API worker {index}",
        "--data-dir",
    )
