"""Why a server could not start, said once: :class:`StartupError` carries a stable ``reason``, what went wrong and
what to do, and the checks that raise it before anything is left behind (data directory, database, HTTP port).

``Server.start`` undoes whatever it had started when one is raised; ``Server.run`` logs it as the one
``server.start_failed`` line and the CLI exits non-zero without a traceback.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from pathlib import Path

from prebuildd.runtime.files import private_dir
from prebuildd.store.probe import (
    DatabaseRefused,
    DatabaseUnreachable,
    DatabaseUrlInvalid,
    wait_for_database,
    where,
)


class StartupError(Exception):
    """The server cannot start; ``reason`` is stable (``port_in_use``, ``database_unreachable``,
    ``database_refused``, ``database_url_invalid``, ``data_dir_unwritable``, ``embedded_postgres_failed``,
    ``http_bind_failed``, ``replica_id_in_use``, ``replica_id_invalid``)."""

    def __init__(self, reason: str, message: str, hint: str) -> None:
        super().__init__(f"{message} ({hint})")
        self.reason = reason
        self.message = message
        self.hint = hint


def check_data_dir(path: Path) -> None:
    """Create the data directory if needed and prove it writable (a file is created and removed)."""
    try:
        private_dir(path)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise StartupError(
            "data_dir_unwritable",
            f"cannot write to the data directory {path}: {exc.strerror or exc}",
            "choose a writable --data-dir (PREBUILDD_DATA_DIR) or fix its owner and permissions",
        ) from None


async def check_database(url: str, wait: float) -> None:
    """Wait up to ``wait`` seconds for PostgreSQL at ``url`` to accept a connection."""
    try:
        await wait_for_database(url, wait)
    except DatabaseUnreachable as exc:
        raise StartupError(
            "database_unreachable",
            f"cannot reach PostgreSQL at {where(url)} (tried for {exc.waited:g} s): {exc.reason}",
            "check the host and port in --postgres-url (PREBUILDD_POSTGRES_URL) and that PostgreSQL is running "
            "and reachable from here; --database-wait sets how long to retry",
        ) from None
    except DatabaseRefused as exc:
        raise StartupError(
            "database_refused",
            f"PostgreSQL at {where(url)} refused the connection: {exc.reason}",
            "check the user, password and database name in --postgres-url (PREBUILDD_POSTGRES_URL)",
        ) from None
    except DatabaseUrlInvalid:
        raise StartupError(
            "database_url_invalid",
            "--postgres-url is not a PostgreSQL URL",
            "give one like postgresql://USER:PASSWORD@HOST:5432/DATABASE (PREBUILDD_POSTGRES_URL)",
        ) from None


def bind_http(host: str, port: int) -> socket.socket:
    """The listening socket for the API, bound here so that a port in use is one clear error (uvicorn would log
    its own lines and exit the process)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StartupError(
            "http_bind_failed",
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            "check --http-address (PREBUILDD_HTTP_ADDRESS)",
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.set_inheritable(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                "port_in_use",
                f"cannot listen on {host}:{port}: the address is already in use",
                "stop the process holding it (ss -ltnp 'sport = :" + str(port) + "') or choose another "
                "--http-address (PREBUILDD_HTTP_ADDRESS)",
            ) from None
        raise StartupError(
            "http_bind_failed",
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            "check --http-address (PREBUILDD_HTTP_ADDRESS)",
        ) from None
    return sock


def write_secret_file(path: Path, secret: str) -> None:
    """Write ``secret`` to ``path`` readable by its owner only, whole or not at all (a temporary file renamed)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
