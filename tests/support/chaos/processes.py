"""The processes a chaos run starts and what it does to them: logs per process, the pid book of kills, stops
and partitions, leftovers of earlier runs, the one-run-at-a-time lock, the network namespace, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tests.support.chaos.params import HOST_ADDRESS, LOCK_FILE, MARKER, NETNS, NS_ADDRESS, VETH_HOST, VETH_NS

# -- processes ---------------------------------------------------------------------------------------------


@dataclass
class Disturbance:
    kind: str
    start: float
    end: float | None = None


class Proc:
    """A subprocess in its own session, its output in a log file, and what was done to each of its pids."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {self.starts} at {time.time():.3f}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
            log.write(f"=== pid {self.popen.pid}\n".encode())

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=10)

    def terminate(self, grace: float = 10.0) -> None:
        if not self.alive():
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        assert self.popen is not None
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill9()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class PidBook:
    """What happened to every pid the harness started: killed, stopped or partitioned, and when."""

    def __init__(self) -> None:
        self.owner: dict[int, str] = {}
        self.procs: dict[int, Proc] = {}
        self.workers: dict[str, int] = {}
        self._offsets: dict[Path, tuple[int, int | None]] = {}
        self.events: dict[int, list[Disturbance]] = {}

    def started(self, proc: Proc) -> None:
        self.owner[proc.pid] = proc.name
        self.procs[proc.pid] = proc
        self.events[proc.pid] = []

    def worker_pid(self, worker_id: str | None) -> int | None:
        """The process of a daemon's worker id: from the ``daemon.started`` lines of the processes' logs (whatever
        the id looks like), else from a pid inside the id."""
        if not worker_id:
            return None
        if worker_id not in self.workers:
            for proc in self.procs.values():
                self._scan(proc)
        if worker_id in self.workers:
            return self.workers[worker_id]
        # The server may qualify a standalone daemon's id (``…@key:<key id>``).
        for worker, pid in self.workers.items():
            if worker_id.startswith(worker + "@"):
                self.workers[worker_id] = pid
                return pid
        return pid_in_worker_id(worker_id)

    def _scan(self, proc: Proc) -> None:
        offset, pid = self._offsets.get(proc.log_path, (0, None))
        try:
            with open(proc.log_path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        for raw in data[:end].decode(errors="replace").splitlines():
            line = _ANSI.sub("", raw)
            if line.startswith("=== pid "):
                pid = int(line.split()[2])
            elif "daemon.started" in line and pid is not None:
                worker = _worker_in(line)
                if worker:
                    self.workers[worker] = pid
        self._offsets[proc.log_path] = (offset + end, pid)

    def alive(self, pid: int) -> bool:
        proc = self.procs.get(pid)
        return proc is not None and proc.alive() and proc.pid == pid

    def begin(self, pid: int, kind: str, at: float | None = None) -> Disturbance:
        event = Disturbance(kind, at if at is not None else time.time())
        self.events.setdefault(pid, []).append(event)
        return event

    def end(self, event: Disturbance, at: float | None = None) -> None:
        event.end = at if at is not None else time.time()

    def killed_at(self, pid: int) -> float | None:
        for event in self.events.get(pid, []):
            if event.kind == "kill":
                return event.start
        return None

    def disturbed_between(self, pid: int, start: float, end: float) -> bool:
        for event in self.events.get(pid, []):
            event_end = event.end if event.end is not None else float("inf")
            if event.kind == "kill":
                event_end = float("inf")
            if event.start <= end and event_end >= start:
                return True
        return False

    def quiet_since(self, pid: int) -> float | None:
        """The end of the pid's last disturbance (0: never disturbed); None while disturbed or once killed."""
        last = 0.0
        for event in self.events.get(pid, []):
            if event.kind == "kill" or event.end is None:
                return None
            last = max(last, event.end)
        return last


def pid_in_worker_id(worker_id: str | None) -> int | None:
    """The process in a daemon's worker id of the form ``host:pid:name:suffix``, when it names one."""
    if not worker_id:
        return None
    for part in worker_id.split(":")[1:3]:
        if part.isdigit():
            return int(part)
    return None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_WORKER = re.compile(r"worker_id=(\S+)")


def _worker_in(line: str) -> str | None:
    """The worker id of a ``daemon.started`` log line, JSON or console."""
    if line.startswith("{"):
        with contextlib.suppress(ValueError):
            value = json.loads(line).get("worker_id")
            return str(value) if value else None
    match = _WORKER.search(line)
    return match.group(1) if match else None


# -- leftovers, lock, network namespace --------------------------------------------------------------------


def marked_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"{MARKER}=".encode() in environ:
            found.append(int(entry.name))
    return found


def remove_leftovers() -> list[str]:
    """Kill processes an earlier run left (they carry the marker) and delete its namespace and veth pair."""
    removed = []
    for pid in marked_pids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
            removed.append(f"process {pid}")
    if shutil.which("ip"):
        if subprocess.run(["ip", "link", "show", VETH_HOST], capture_output=True).returncode == 0:
            subprocess.run(["ip", "link", "del", VETH_HOST], capture_output=True)
            removed.append(f"link {VETH_HOST}")
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in namespaces.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith("pbchaos"):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
                removed.append(f"netns {name}")
    return removed


@contextlib.contextmanager
def run_lock(timeout: float = 120.0) -> Iterator[None]:
    """One chaos run at a time on a machine: they share the namespace names and remove each other's leftovers."""
    handle = open(LOCK_FILE, "w")  # noqa: SIM115 (held for the whole run)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"another chaos run holds {LOCK_FILE}") from None
                time.sleep(0.5)
        yield
    finally:
        handle.close()


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def setup_netns() -> None:
    """A namespace for one standalone daemon, joined to the host by a veth pair; traffic never leaves the host."""
    ip("netns", "add", NETNS)
    ip("link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS)
    ip("link", "set", VETH_NS, "netns", NETNS)
    ip("addr", "add", f"{HOST_ADDRESS}/30", "dev", VETH_HOST)
    ip("link", "set", VETH_HOST, "up")
    ip("netns", "exec", NETNS, "ip", "addr", "add", f"{NS_ADDRESS}/30", "dev", VETH_NS)
    ip("netns", "exec", NETNS, "ip", "link", "set", VETH_NS, "up")
    ip("netns", "exec", NETNS, "ip", "link", "set", "lo", "up")


def teardown_netns() -> None:
    subprocess.run(["ip", "link", "del", VETH_HOST], capture_output=True)
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)


def netns_available() -> str | None:
    """None when this machine can run the partition scenario, else why not."""
    if os.geteuid() != 0:
        return "not root: ip netns and kill of the PostgreSQL user's processes need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    probe = f"{NETNS}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


# -- waiting -----------------------------------------------------------------------------------------------


async def until(
    condition: Callable[[], Awaitable[bool] | bool], timeout: float, interval: float = 0.2
) -> float | None:
    """Poll ``condition`` until true: the seconds it took, or None at the deadline."""
    start = time.monotonic()
    while True:
        outcome = condition()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        await asyncio.sleep(interval)


def epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None
