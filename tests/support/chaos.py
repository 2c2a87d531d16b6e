"""The chaos harness: one PostgreSQL and three `prebuildd server` replicas as real processes, faulted on a schedule
(kill -9, PostgreSQL restarts and outages, SIGSTOP of the lock holder, a daemon killed mid-job, a network partition)
while claims run, and a poller that reads PostgreSQL directly and counts what went wrong.

Shared by the short form (tests/chaos/test_chaos_short.py, part of the test suite) and the long form
(bench/chaos.py, which writes docs/reliability.md). Everything it starts carries ``PBCHAOS_RUN`` in its
environment, so a later run can find and remove what a crashed run left behind; the network namespace and the
veth pair use the fixed prefix ``pbchaos``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
from psycopg.rows import dict_row

from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.server.embedded_pg import EmbeddedPostgres
from prebuildd.templates.archive import pack_directory

MARKER = "PBCHAOS_RUN"
NETNS = "pbchaos-ns"
VETH_HOST = "pbchaos-h"
VETH_NS = "pbchaos-d"
HOST_ADDRESS = "10.231.7.1"
NS_ADDRESS = "10.231.7.2"
LOCK_FILE = Path(tempfile.gettempdir()) / "pbchaos.lock"
DATABASE = "prebuildd"
CYCLE_LOCK_KEY = 0x70726563
"""The reconciler's advisory cycle lock (prebuilds/loop.py CYCLE_LOCK), for the lock-holder detection."""

POOL_TEMPLATE = "chaos"
PROBE_TEMPLATE = "chaos-probe"
LO_TEMPLATE = "chaos-lo"
NS_TEMPLATE = "chaos-ns"
POOLS = {"pool-5": 5, "pool-3": 3, "pool-8": 8}
POOL_TAG = "pool=chaos"
"""Pool jobs carry this tag and only the embedded daemons offer it: the standalone daemons run their own
templates, so a fault of theirs is measured on its own and a pool's recovery depends on the replicas only."""


# -- parameters --------------------------------------------------------------------------------------------


@dataclass
class ChaosParams:
    """One run's schedule. ``None`` for an interval or timeout means the server's default."""

    form: str
    replica_kills: int
    min_claims: int
    min_duration: float
    """Replica kills go on (beyond ``replica_kills``) until the run has lasted this long and made this many claims."""
    pg_restarts: int = 1
    pg_outage: float = 40.0
    freeze: float = 60.0
    partition: float = 30.0
    replicas: int = 3
    daemons_per_replica: int = 3
    reconcile_interval: float | None = None
    stale_job_timeout: float | None = None
    heartbeat_interval: float = 2.0
    claim_every: float = 2.0
    claim_batch: int = 3
    start_delay: str = "3s"
    delete_delay: str = "1s"
    import_delay: str = "1s"
    standalone_delay: str = "6s"
    replica_bound: float = 15.0
    pg_bound: float = 30.0
    freeze_bound: float = 30.0
    recovery_slack: float = 15.0
    """How long past its bound a recovery is awaited before it is reported as missed."""
    pending_bound: float = 60.0
    """A pending job older than this (counted from the end of the last fault) is stuck."""
    lost_completion_bound: float = 30.0
    """A job still running this long after its daemon was last disturbed has lost its completion."""
    probe_deadline: float = 40.0
    kill_down: tuple[float, float] = (1.0, 4.0)

    @property
    def stale_timeout_effective(self) -> float:
        return self.stale_job_timeout if self.stale_job_timeout is not None else 300.0

    @property
    def stuck_running_bound(self) -> float:
        """A job held by a dead daemon must be failed within the stale timeout plus a reaper pass plus a margin."""
        stale = self.stale_timeout_effective
        return stale + min(stale / 5, 60.0) + 30.0


def short_params() -> ChaosParams:
    """The short form (at most 3 minutes): every scenario once, faults and bounds scaled to fit. What is
    shortened: the stale-job timeout (30 s, so that a lost job fails within the run), the PostgreSQL outage (8 s),
    the freeze (32 s: just past the 30 s bound), the partition (8 s), the heartbeat (1 s), the standalone jobs
    (4 s); a recovery is awaited only up to its bound."""
    return ChaosParams(
        form="short",
        replica_kills=2,
        min_claims=0,
        min_duration=0.0,
        pg_restarts=1,
        pg_outage=8.0,
        freeze=32.0,
        partition=8.0,
        stale_job_timeout=30.0,
        heartbeat_interval=1.0,
        claim_every=1.5,
        claim_batch=2,
        standalone_delay="4s",
        recovery_slack=0.0,
        pending_bound=30.0,
        lost_completion_bound=20.0,
        probe_deadline=10.0,
        kill_down=(0.5, 1.5),
    )


def long_params() -> ChaosParams:
    """The long form: default reconcile interval and stale-job timeout, 40 s PostgreSQL outage, 60 s freeze."""
    return ChaosParams(
        form="long", replica_kills=30, min_claims=300, min_duration=600.0, pg_restarts=2, recovery_slack=10.0
    )


# -- results -----------------------------------------------------------------------------------------------


@dataclass
class Recovery:
    seconds: float | None
    bound: float

    @property
    def ok(self) -> bool:
        return self.seconds is not None and self.seconds <= self.bound


@dataclass
class ScenarioStats:
    name: str
    faults: int = 0
    samples: int = 0
    over_target: int = 0
    double_claims: int = 0
    lost_workspaces: int = 0
    lost_completions: int = 0
    stuck_jobs: int = 0
    daemons_expected: int = 0
    daemons_seen: int = 0
    daemons_checked: bool = False
    daemons_lost: int = 0
    """Daemons first found lost after this scenario (killed ones are expected back with their replica)."""
    recoveries: list[Recovery] = field(default_factory=list)
    rejoined: bool | None = None
    rejoin_label: str = "rejoined"
    """What ``rejoined`` says: the partitioned daemon rejoined, or the restarted one took work."""
    notes: list[str] = field(default_factory=list)
    metric_daemons: str = ""

    @property
    def violations(self) -> list[str]:
        found = []
        for label, value in (
            ("samples over target", self.over_target),
            ("double claims", self.double_claims),
            ("lost workspaces", self.lost_workspaces),
            ("lost completions", self.lost_completions),
            ("stuck jobs", self.stuck_jobs),
            ("daemons lost", self.daemons_lost),
        ):
            if value:
                found.append(f"{value} {label}")
        missed = [r for r in self.recoveries if not r.ok]
        if missed:
            worst = max((r.seconds or float("inf")) for r in missed)
            found.append(
                f"{len(missed)} of {len(self.recoveries)} recoveries over the {missed[0].bound:.0f} s bound "
                f"(worst {'never' if worst == float('inf') else f'{worst:.1f} s'})"
            )
        if self.rejoined is False:
            found.append(f"{self.rejoin_label}: no")
        return found

    def recovery_cell(self) -> str:
        if self.rejoined is not None and not self.recoveries:
            return f"{self.rejoin_label}: " + ("yes" if self.rejoined else "no")
        if not self.recoveries:
            return "-"
        times = [r.seconds for r in self.recoveries]
        done = [t for t in times if t is not None]
        worst = "never" if len(done) < len(times) else f"{max(done):.1f} s"
        cell = f"max {worst} (bound {self.recoveries[0].bound:.0f} s"
        if len(times) > 1:
            within = sum(r.ok for r in self.recoveries)
            cell += f", {within}/{len(times)} within"
        cell += ")"
        if self.rejoined is not None:
            cell += f"; {self.rejoin_label}: " + ("yes" if self.rejoined else "no")
        return cell


@dataclass
class ClaimRecord:
    user: str
    user_id: str
    status: int
    workspace_id: str | None
    claimed: bool
    at: float
    error: str = ""


@dataclass
class ChaosReport:
    params: ChaosParams
    scenarios: list[ScenarioStats]
    workdir: Path
    started_at: float
    ended_at: float
    samples: int
    claims: list[ClaimRecord]
    detail: list[str]

    @property
    def violations(self) -> list[str]:
        return [f"{s.name}: {v}" for s in self.scenarios for v in s.violations]

    def claim_summary(self) -> str:
        total = len(self.claims)
        claimed = sum(1 for c in self.claims if c.status == 201 and c.claimed)
        cold = sum(1 for c in self.claims if c.status == 201 and not c.claimed)
        errors: dict[str, int] = {}
        for c in self.claims:
            if c.status != 201:
                key = str(c.status) if c.status else "no answer"
                errors[key] = errors.get(key, 0) + 1
        error_text = ", ".join(f"{n}× {k}" for k, n in sorted(errors.items())) or "none"
        return f"{total} claims: {claimed} claimed a prebuild, {cold} cold builds, errors: {error_text}"

    def table(self) -> str:
        header = (
            "| scenario | faults | over-target samples | double claims | lost workspaces | lost completions "
            "| stuck jobs | daemons lost | back at target / rejoined | result |"
        )
        lines = [header, "|" + "---|" * 10]
        for s in self.scenarios:
            daemons = (
                f"{s.daemons_lost} ({s.daemons_seen}/{s.daemons_expected} alive)"
                if s.daemons_checked
                else "-"
            )
            verdict = "ok" if not s.violations else "VIOLATION"
            lines.append(
                f"| {s.name} | {s.faults} | {s.over_target} / {s.samples} | {s.double_claims} | "
                f"{s.lost_workspaces} | {s.lost_completions} | {s.stuck_jobs} | {daemons} | "
                f"{s.recovery_cell()} | {verdict} |"
            )
        return "\n".join(lines)

    def text(self) -> str:
        out = [self.table(), "", self.claim_summary()]
        out.append(
            f"{self.samples} poller samples over {self.ended_at - self.started_at:.0f} s; logs in {self.workdir}"
        )
        notes = [f"- {s.name}: {n}" for s in self.scenarios for n in s.notes]
        if notes:
            out += ["", "Notes:", *notes]
        if self.detail:
            out += ["", "Violation detail:", *(f"- {d}" for d in self.detail)]
        if self.violations:
            out += ["", "VIOLATIONS:", *(f"- {v}" for v in self.violations)]
        return "\n".join(out)


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


def _marked_pids() -> list[int]:
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
    for pid in _marked_pids():
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


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def setup_netns() -> None:
    """A namespace for one standalone daemon, joined to the host by a veth pair; traffic never leaves the host."""
    _ip("netns", "add", NETNS)
    _ip("link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS)
    _ip("link", "set", VETH_NS, "netns", NETNS)
    _ip("addr", "add", f"{HOST_ADDRESS}/30", "dev", VETH_HOST)
    _ip("link", "set", VETH_HOST, "up")
    _ip("netns", "exec", NETNS, "ip", "addr", "add", f"{NS_ADDRESS}/30", "dev", VETH_NS)
    _ip("netns", "exec", NETNS, "ip", "link", "set", VETH_NS, "up")
    _ip("netns", "exec", NETNS, "ip", "link", "set", "lo", "up")


def teardown_netns() -> None:
    subprocess.run(["ip", "link", "del", VETH_HOST], capture_output=True)
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)


def netns_available() -> str | None:
    """None when this machine can run the partition scenario, else why not."""
    if os.geteuid() != 0:
        return "not root: ip netns and kill of the PostgreSQL user's processes need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    return None


def _free_port(host: str) -> int:
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


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


# -- the poller --------------------------------------------------------------------------------------------

POOLS_SQL = """
SELECT p.name, p.desired_instances AS desired,
       count(lb.workspace_id) FILTER (
           WHERE lb.transition = 'start' AND lb.job_status IN ('pending', 'running', 'canceling')) AS starting,
       count(lb.workspace_id) FILTER (
           WHERE lb.transition = 'start' AND lb.job_status = 'succeeded'
             AND (p.last_invalidated_at IS NULL OR lb.workspace_created_at >= p.last_invalidated_at)
             AND (p.ttl_seconds = 0 OR lb.workspace_created_at > now() - make_interval(secs => p.ttl_seconds))
       ) AS running_valid
FROM templates t
JOIN template_version_presets p ON p.template_version_id = t.active_version_id
LEFT JOIN workspace_latest_builds lb ON lb.preset_id = p.id AND lb.owner_id = %(prebuilds)s
WHERE t.name = %(template)s AND NOT t.deleted AND p.desired_instances IS NOT NULL
GROUP BY p.id, p.name, p.desired_instances
"""
"""Per pool, as the invariant is defined (SPEC §5, the reconciler's count_pool): valid running plus starting
prebuilds, read from the latest build of every live workspace the prebuilds user owns."""

ACTIVE_JOBS_SQL = """
SELECT id, job_status, worker_id, created_at, started_at, updated_at
FROM provisioner_jobs WHERE completed_at IS NULL AND coalesce(error, '') = ''
"""

SERVER_FAILED_SQL = """
SELECT id, worker_id, started_at, completed_at, error, failure_class
FROM provisioner_jobs
WHERE job_status = 'failed' AND completed_at > %(since)s AND started_at IS NOT NULL
  AND coalesce(failure_class, '') NOT IN ('build', 'config')
"""
"""Jobs the server failed rather than their daemon: as stale, or as lost with their daemon (the echo template of
the chaos run never fails by itself)."""

DOUBLE_CLAIMS_SQL = """
SELECT workspace_id, count(*) AS claims, count(DISTINCT user_id) AS users
FROM events WHERE kind = 'claim.succeeded' AND created_at > %(since)s
GROUP BY workspace_id HAVING count(*) > 1
"""

NEW_PREBUILDS_SQL = """
SELECT count(*) AS n, min(b.created_at) AS first
FROM workspace_builds b
WHERE b.reason = 'prebuild' AND b.build_number = 1 AND b.transition = 'start' AND b.created_at > %(since)s
"""

ADVISORY_HOLDER_SQL = """
SELECT a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %(hi)s AND l.objid = %(lo)s AND l.objsubid = 1
"""

LEASE_TABLES_SQL = """
SELECT table_name, array_agg(column_name::text) AS columns
FROM information_schema.columns
WHERE table_schema = current_schema() AND (table_name LIKE '%%lease%%' OR table_name LIKE '%%cycle_lock%%')
GROUP BY table_name
"""


@dataclass
class Sample:
    at: float
    pools: dict[str, tuple[int, int, int]]
    """name → (desired, running_valid, starting)"""

    @property
    def over(self) -> list[str]:
        return [n for n, (d, r, s) in self.pools.items() if r + s > d]

    @property
    def at_target(self) -> bool:
        return len(self.pools) == len(POOLS) and all(r >= d for d, r, _ in self.pools.values())


class Poller:
    """Reads PostgreSQL on its own connection every half second (reconnecting through outages) and counts."""

    def __init__(self, harness: Harness) -> None:
        self.h = harness
        self.latest: Sample | None = None
        self.samples = 0
        self.conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self.lost_jobs: set[str] = set()
        self.stuck_jobs: set[str] = set()
        self.double_claim_ids: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    async def connection(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        if self.conn is None or self.conn.closed:
            self.conn = await psycopg.AsyncConnection.connect(
                self.h.poller_url, autocommit=True, row_factory=dict_row, connect_timeout=2
            )
        return self.conn

    async def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        conn = await self.connection()
        try:
            cur = await asyncio.wait_for(conn.execute(sql, params or {}), timeout=5)  # type: ignore[arg-type]
            return await cur.fetchall()
        except (psycopg.Error, OSError, TimeoutError):
            with contextlib.suppress(Exception):
                await conn.close()
            self.conn = None
            raise

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chaos-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()

    async def _run(self) -> None:
        tick = 0
        while True:
            started = time.monotonic()
            try:
                await self.sample(tick)
                tick += 1
            except (psycopg.Error, OSError, TimeoutError):
                self.failures += 1
            await asyncio.sleep(max(0.5 - (time.monotonic() - started), 0.05))

    async def sample(self, tick: int) -> None:
        h = self.h
        now = time.time()
        rows = await self.query(POOLS_SQL, {"prebuilds": PREBUILDS_USER_ID, "template": POOL_TEMPLATE})
        sample = Sample(now, {r["name"]: (r["desired"], r["running_valid"], r["starting"]) for r in rows})
        self.latest = sample
        self.samples += 1
        stats = h.current
        stats.samples += 1
        if sample.over:
            stats.over_target += 1
            h.detail(f"over target at {now:.1f}: " + ", ".join(f"{n} {sample.pools[n]}" for n in sample.over))
        await self._check_jobs(now)
        if tick % 4 == 0:
            for row in await self.query(DOUBLE_CLAIMS_SQL, {"since": h.started_dt}):
                wid = str(row["workspace_id"])
                if wid not in self.double_claim_ids:
                    self.double_claim_ids.add(wid)
                    h.current.double_claims += 1
                    h.detail(f"workspace {wid} claimed {row['claims']} times by {row['users']} users")

    async def _check_jobs(self, now: float) -> None:
        h, p = self.h, self.h.params
        fault_end = h.last_fault_end
        for row in await self.query(ACTIVE_JOBS_SQL):
            jid = str(row["id"])
            if jid in self.lost_jobs or jid in self.stuck_jobs:
                continue
            if row["job_status"] == "pending":
                since = max(_ts(row["created_at"]) or now, fault_end)
                if h.fault_active is None and now - since > p.pending_bound:
                    self.stuck_jobs.add(jid)
                    h.current.stuck_jobs += 1
                    h.detail(f"job {jid} pending for {now - since:.0f} s since the last fault ended")
                continue
            pid = h.pids.worker_pid(row["worker_id"])
            started = _ts(row["started_at"]) or now
            if pid is None or pid not in h.pids.owner:
                age = now - (_ts(row["updated_at"]) or now)
                if age > p.stuck_running_bound:
                    self.stuck_jobs.add(jid)
                    h.current.stuck_jobs += 1
                    h.detail(
                        f"job {jid} running on unknown worker {row['worker_id']} with no update for {age:.0f} s"
                    )
                continue
            killed = h.pids.killed_at(pid)
            if killed is not None:
                if killed >= started and now - killed > p.stuck_running_bound:
                    self.stuck_jobs.add(jid)
                    h.current.stuck_jobs += 1
                    h.detail(
                        f"job {jid} still running {now - killed:.0f} s after its daemon "
                        f"({h.pids.owner[pid]}, pid {pid}) was killed (bound {p.stuck_running_bound:.0f} s)"
                    )
                continue
            quiet = h.pids.quiet_since(pid)
            if quiet is None or h.fault_active == "database":
                continue
            since = max(started, quiet, h.last_db_return)
            if now - since > p.lost_completion_bound:
                self.lost_jobs.add(jid)
                h.current.lost_completions += 1
                state = "live daemon" if h.pids.alive(pid) else "daemon that exited by itself,"
                h.detail(
                    f"job {jid} still running {now - since:.0f} s on {state} {row['worker_id']} "
                    f"({h.pids.owner[pid]}): its completion is lost"
                )
        for row in await self.query(SERVER_FAILED_SQL, {"since": h.started_dt}):
            jid = str(row["id"])
            if jid in self.lost_jobs or jid in self.stuck_jobs:
                continue
            pid = h.pids.worker_pid(row["worker_id"])
            if pid is None or pid not in h.pids.owner:
                continue
            started, completed = _ts(row["started_at"]) or 0.0, _ts(row["completed_at"]) or now
            if not h.pids.disturbed_between(pid, started, completed):
                self.lost_jobs.add(jid)
                h.current.lost_completions += 1
                h.detail(
                    f"job {jid} of live, undisturbed daemon {row['worker_id']} ({h.pids.owner[pid]}) failed by "
                    f"the server ({row['failure_class']}): {row['error']}"
                )


# -- the harness -------------------------------------------------------------------------------------------

POOL_MANIFEST = """
provisioner = "echo"
description = "The chaos run's pools."
tags = {{ pool = "chaos" }}

[echo.import]
delay = "{import_delay}"
[echo.start]
delay = "{start_delay}"
[echo.stop]
delay = "{delete_delay}"
[echo.delete]
delay = "{delete_delay}"
{presets}
"""

PRESET = """
[[presets]]
name = "{name}"
[presets.prebuilds]
instances = {instances}
"""

PLAIN_MANIFEST = """
provisioner = "echo"
tags = {{ {tags} }}

[echo.import]
delay = "{import_delay}"
[echo.start]
delay = "{start_delay}"
"""


@dataclass
class Replica:
    index: int
    proc: Proc
    port: int
    data_dir: Path
    frozen: bool = False

    @property
    def name(self) -> str:
        return self.proc.name


class Harness:
    def __init__(
        self, params: ChaosParams, workdir: Path | None = None, *, log: Callable[[str], None]
    ) -> None:
        self.params = params
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="pbchaos-"))
        self.log_dir = self.workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log = log
        self.env = {**os.environ, MARKER: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
        self.env = {k: v for k, v in self.env.items() if not k.startswith("PREBUILDD_")}
        self.env[MARKER] = str(os.getpid())
        self.pids = PidBook()
        self.current = ScenarioStats("setup (pools filled from empty)")
        self.scenarios: list[ScenarioStats] = [self.current]
        self.claims: list[ClaimRecord] = []
        self.details: list[str] = []
        self.started = time.time()
        self.started_dt = datetime.fromtimestamp(self.started).astimezone()
        self.fault_active: str | None = None
        self.last_fault_end = 0.0
        self.last_db_return = 0.0
        self.replicas: list[Replica] = []
        self.standalone: dict[str, Proc] = {}
        self.pg: EmbeddedPostgres | None = None
        self.poller = Poller(self)
        self.http_host = "127.0.0.1"
        self.netns = False
        self.owner_token = ""
        self.users: list[tuple[str, str, str]] = []
        """(username, user id, token) of the claimers."""
        self.probe_token = ""
        self.key_secrets: dict[str, str] = {}
        self.missing_daemons: dict[int, int] = {}
        """pid → daemons of that process found lost so far."""
        self._claims_paused = asyncio.Event()
        self._claim_task: asyncio.Task[None] | None = None
        self._claims_in_flight: set[asyncio.Task[ClaimRecord]] = set()
        self._names = 0
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(35.0, connect=5.0))

    # -- bookkeeping

    def say(self, line: str) -> None:
        self._log(f"{time.time() - self.started:6.1f}s {line}")

    def detail(self, line: str) -> None:
        text = f"[{self.current.name}] {line}"
        if text not in self.details:
            self.details.append(text)
            self.say("  ! " + line)

    def scenario(self, name: str) -> ScenarioStats:
        stats = ScenarioStats(name)
        self.scenarios.append(stats)
        self.current = stats
        self.say(f"== {name}")
        return stats

    def fresh_name(self, prefix: str) -> str:
        self._names += 1
        return f"{prefix}-{self._names}"

    @property
    def poller_url(self) -> str:
        assert self.pg is not None
        return self.pg.url(DATABASE) + "?application_name=pbchaos-poller"

    def fault_started(self, kind: str) -> None:
        self.fault_active = kind

    def fault_ended(self) -> None:
        if self.fault_active == "database":
            self.last_db_return = time.time()
        self.fault_active = None
        self.last_fault_end = time.time()

    # -- setup

    async def setup(self) -> None:
        removed = remove_leftovers()
        if removed:
            self.say("removed leftovers of an earlier run: " + ", ".join(removed))
        if netns_available() is None:
            setup_netns()
            self.netns = True
            self.http_host = HOST_ADDRESS
        self.say(f"work dir {self.workdir}")
        await asyncio.to_thread(self._start_postgres)
        for i in range(self.params.replicas):
            self.replicas.append(self._replica(i))
        await self.start_replica(self.replicas[0])
        token_file = self.replicas[0].data_dir / "owner-token"
        self.owner_token = token_file.read_text().strip()
        await asyncio.gather(*(self.start_replica(r) for r in self.replicas[1:]))
        await self._create_users()
        await self._push_templates()
        await self._start_standalone()
        self.poller.start()
        waited = await until(lambda: bool(self.poller.latest and self.poller.latest.at_target), 120)
        if waited is None:
            raise RuntimeError(f"the pools never reached their targets: {self.poller.latest}")
        self.say(f"pools at target {waited:.1f} s after setup")
        self._claim_task = asyncio.create_task(self._claimer(), name="chaos-claims")

    def _start_postgres(self) -> None:
        self.pg = EmbeddedPostgres(
            self.workdir / "pg",
            settings={"max_connections": "300", "fsync": "off", "shared_buffers": "64MB"},
        )
        admin = self.pg.start()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')  # type: ignore[arg-type]

    def _replica(self, index: int) -> Replica:
        assert self.pg is not None
        p = self.params
        port = _free_port(self.http_host)
        data_dir = self.workdir / f"replica-{index}"
        data_dir.mkdir()
        url = self.pg.url(DATABASE) + f"?application_name=pbchaos-replica-{index}"
        argv = [
            sys.executable, "-m", "prebuildd", "server",
            "--postgres-url", url,
            "--data-dir", str(data_dir),
            "--http-address", f"{self.http_host}:{port}",
            "--provisioner-daemons", str(p.daemons_per_replica),
            "--provisioner-tag", POOL_TAG,
            "--heartbeat-interval", f"{p.heartbeat_interval}s",
            "--shutdown-grace", "5s",
            "--log-format", "json",
        ]  # fmt: skip
        if p.reconcile_interval is not None:
            argv += ["--reconcile-interval", f"{p.reconcile_interval}s"]
        if p.stale_job_timeout is not None:
            argv += ["--stale-job-timeout", f"{p.stale_job_timeout}s"]
        return Replica(index, Proc(f"replica-{index}", argv, self.log_dir, self.env), port, data_dir)

    def url(self, replica: Replica) -> str:
        return f"http://{self.http_host}:{replica.port}"

    async def start_replica(self, replica: Replica, timeout: float = 90.0) -> float:
        """Start (or restart) a replica; returns when its HTTP API answers /healthz (the time it answered)."""
        replica.proc.start()
        self.pids.started(replica.proc)

        async def answers() -> bool:
            if not replica.proc.alive():
                raise RuntimeError(f"{replica.name} exited:\n{replica.proc.log_tail()}")
            try:
                return (await self.client.get(self.url(replica) + "/healthz", timeout=2)).status_code == 200
            except httpx.HTTPError:
                return False

        if await until(answers, timeout, 0.1) is None:
            raise RuntimeError(
                f"{replica.name} did not answer within {timeout:.0f} s:\n{replica.proc.log_tail()}"
            )
        return time.time()

    def live_replicas(self) -> list[Replica]:
        return [r for r in self.replicas if r.proc.alive() and not r.frozen]

    async def api(
        self, method: str, path: str, token: str | None = None, *, replica: Replica | None = None, **kw: Any
    ) -> httpx.Response:
        target = replica or random.choice(self.live_replicas())
        headers = {"Authorization": f"Bearer {token or self.owner_token}", **kw.pop("headers", {})}
        return await self.client.request(method, self.url(target) + "/api/v1" + path, headers=headers, **kw)

    async def api_ok(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        response = await self.api(method, path, token, **kw)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code} {response.text}")
        return response.json() if response.content else None

    async def _create_users(self) -> None:
        for name in ("claimer-a", "claimer-b", "claimer-c", "claimer-d", "prober"):
            user = await self.api_ok("POST", "/users", json={"username": name})
            token = await self.api_ok("POST", "/tokens", json={"name": "chaos", "username": name})
            if name == "prober":
                self.probe_token = token["secret"]
            else:
                self.users.append((name, str(user["id"]), token["secret"]))

    async def push_template(self, name: str, manifest: str) -> None:
        directory = self.workdir / "templates" / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "prebuildd.toml").write_text(manifest)
        archive = pack_directory(directory)
        await self.api_ok(
            "POST",
            f"/templates/{name}/versions",
            params={"activate": "true"},
            content=archive,
            headers={"Content-Type": "application/gzip"},
        )

        async def active() -> bool:
            response = await self.api("GET", f"/templates/{name}")
            return response.status_code == 200 and response.json().get("active_version_id") is not None

        if await until(active, 60, 0.3) is None:
            raise RuntimeError(f"template {name} was not imported within 60 s")

    async def _push_templates(self) -> None:
        p = self.params
        presets = "".join(PRESET.format(name=n, instances=i) for n, i in POOLS.items())
        delays = {"import_delay": p.import_delay, "delete_delay": p.delete_delay}
        await self.push_template(
            POOL_TEMPLATE, POOL_MANIFEST.format(presets=presets, start_delay=p.start_delay, **delays)
        )
        await self.push_template(
            PROBE_TEMPLATE,
            PLAIN_MANIFEST.format(tags='pool = "chaos"', import_delay="0s", start_delay="1s"),
        )

    async def _start_standalone(self) -> None:
        p = self.params
        zones = {"lo": LO_TEMPLATE}
        if self.netns:
            zones["ns"] = NS_TEMPLATE
        for zone, template in zones.items():
            created = await self.api_ok(
                "POST", "/provisioner-keys", json={"name": f"chaos-{zone}", "tags": {"zone": zone}}
            )
            self.key_secrets[zone] = created["secret"]
            url = f"http://{self.http_host}:{self.replicas[0].port}"
            argv = [
                sys.executable, "-m", "prebuildd", "provisioner", "start",
                "--url", url, "--key", created["secret"], "--name", f"standalone-{zone}",
                "--work-dir", str(self.workdir / f"standalone-{zone}"),
                "--heartbeat-interval", f"{p.heartbeat_interval}s", "--tag", f"zone={zone}",
            ]  # fmt: skip
            if zone == "ns":
                argv = ["ip", "netns", "exec", NETNS, *argv]
            proc = Proc(f"standalone-{zone}", argv, self.log_dir, self.env)
            self.standalone[zone] = proc
            self._start_standalone_proc(proc)
            await self.push_template(
                template,
                PLAIN_MANIFEST.format(
                    tags=f'zone = "{zone}"', import_delay="0s", start_delay=p.standalone_delay
                ),
            )

    def _start_standalone_proc(self, proc: Proc) -> None:
        proc.start()
        self.pids.started(proc)

    # -- claims

    async def _claimer(self) -> None:
        p = self.params
        while True:
            await asyncio.sleep(p.claim_every)
            if self._claims_paused.is_set() or not self.live_replicas():
                continue
            for _ in range(p.claim_batch):
                task = asyncio.create_task(self.claim(random.choice(list(POOLS))))
                self._claims_in_flight.add(task)
                task.add_done_callback(self._claims_in_flight.discard)

    async def claim(self, preset: str) -> ClaimRecord:
        username, user_id, token = random.choice(self.users)
        name = self.fresh_name("claim")
        record = ClaimRecord(username, user_id, 0, None, False, time.time())
        self.claims.append(record)
        try:
            response = await self.api(
                "POST", "/workspaces", token, json={"name": name, "template": POOL_TEMPLATE, "preset": preset}
            )
        except httpx.HTTPError as exc:
            record.error = repr(exc)
            return record
        record.status = response.status_code
        if response.status_code == 201:
            body = response.json()
            record.workspace_id = str(body["id"])
            record.claimed = bool(body.get("claimed"))
        else:
            record.error = response.text[:200]
        return record

    @contextlib.asynccontextmanager
    async def claims_paused(self) -> Any:
        self._claims_paused.set()
        try:
            yield
        finally:
            self._claims_paused.clear()

    async def check_claims(self) -> None:
        """Every claim answered 201 names a live workspace of its user, and no prebuild went to two requests."""
        stats = self.current
        handed: dict[str, list[ClaimRecord]] = {}
        done = [
            c for c in self.claims if c.status == 201 and c.workspace_id and not getattr(c, "checked", False)
        ]
        for c in self.claims:
            if c.status == 201 and c.claimed and c.workspace_id:
                handed.setdefault(c.workspace_id, []).append(c)
        if not done:
            return
        rows = await self._query_with_retry(
            "SELECT id::text AS id, owner_id::text AS owner_id, deleted FROM workspaces WHERE id = ANY(%(ids)s)",
            {"ids": [UUID(c.workspace_id) for c in done if c.workspace_id]},
        )
        found = {r["id"]: r for r in rows}
        for c in done:
            row = found.get(c.workspace_id or "")
            if row is None or row["deleted"] or row["owner_id"] != c.user_id:
                stats.lost_workspaces += 1
                self.detail(
                    f"claim by {c.user} answered 201 with workspace {c.workspace_id}, but the database has {row}"
                )
            c.checked = True  # type: ignore[attr-defined]
        for wid, records in handed.items():
            if len(records) > 1 and wid not in self.poller.double_claim_ids:
                self.poller.double_claim_ids.add(wid)
                stats.double_claims += 1
                self.detail(f"prebuild {wid} handed to {len(records)} requests: {[r.user for r in records]}")

    async def _query_with_retry(
        self, sql: str, params: dict[str, Any], timeout: float = 60
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self.poller.query(sql, params)
            except (psycopg.Error, OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    # -- recovery

    async def back_at_target(self, since: float, bound: float) -> Recovery:
        """Seconds from ``since`` until a sample shows every pool at target (claims paused meanwhile)."""
        deadline = bound + self.params.recovery_slack

        def reached() -> bool:
            s = self.poller.latest
            return s is not None and s.at + 0.01 >= since and s.at_target

        async with self.claims_paused():
            await until(reached, deadline - (time.time() - since), 0.1)
        latest = self.poller.latest
        seconds = (latest.at - since) if latest is not None and reached() else None
        if seconds is None and latest is not None:
            self.detail(
                f"pools not back at target {deadline:.0f} s after the fault: "
                + ", ".join(f"{n} running {r}/{d}, starting {s}" for n, (d, r, s) in latest.pools.items())
            )
        return Recovery(max(seconds, 0.0) if seconds is not None else None, bound)

    # -- daemons

    async def probe_daemons(self) -> None:
        """Which daemons take work: a burst of short cold builds per tag (twice as many as there are embedded
        daemons, one per standalone daemon); a daemon that runs none within the deadline is lost. A loss is counted
        once, in the scenario where it is first seen."""
        stats = self.current
        per_pid = {r.proc.pid: self.params.daemons_per_replica for r in self.replicas if r.proc.alive()}
        per_pid |= {proc.pid: 1 for proc in self.standalone.values() if proc.alive()}
        embedded_expected = sum(n for pid, n in per_pid.items() if self.pids.owner[pid].startswith("replica"))
        zones = [z for z, proc in self.standalone.items() if proc.alive()]
        seen: set[str] = set()
        deadline = time.monotonic() + self.params.probe_deadline
        for _attempt in range(2):
            jobs = await self._probe_jobs(2 * embedded_expected, zones)
            await until(functools.partial(self._jobs_done, jobs), max(deadline - time.monotonic(), 1.0), 0.3)
            for row in await self._query_with_retry(
                "SELECT worker_id FROM provisioner_jobs WHERE id = ANY(%(ids)s) AND worker_id IS NOT NULL",
                {"ids": jobs},
            ):
                seen.add(row["worker_id"])
            if self._missing(per_pid, seen) == {} or time.monotonic() > deadline:
                break
        missing = self._missing(per_pid, seen)
        # Standalone daemons that died by themselves are expected too (they were not killed by the harness).
        for proc in self.standalone.values():
            if not proc.alive() and self.pids.killed_at(proc.pid) is None:
                missing[proc.pid] = 1
        new = {pid: n - self.missing_daemons.get(pid, 0) for pid, n in missing.items()}
        new = {pid: n for pid, n in new.items() if n > 0}
        self.missing_daemons.update(missing)
        expected_total = embedded_expected + len(self.standalone)
        stats.daemons_expected = expected_total
        stats.daemons_seen = expected_total - sum(missing.values())
        stats.daemons_lost += sum(new.values())
        stats.daemons_checked = True
        metrics = await self.daemon_metrics()
        if new:
            where = ", ".join(f"{self.pids.owner[pid]} (pid {pid}): {n}" for pid, n in new.items())
            self.detail(
                f"daemon probe: daemons that ran no job: {where}; metrics: {metrics or 'none exported'}"
            )
        stats.metric_daemons = metrics

    def _missing(self, per_pid: dict[int, int], seen: set[str]) -> dict[int, int]:
        counts: dict[int, int] = {}
        for worker in seen:
            pid = self.pids.worker_pid(worker)
            if pid is not None:
                counts[pid] = counts.get(pid, 0) + 1
        return {pid: n - counts.get(pid, 0) for pid, n in per_pid.items() if counts.get(pid, 0) < n}

    async def heal(self) -> None:
        """Between scenarios: restart the replicas whose daemons were lost and clear the pools' backoff, so that
        each scenario starts from a full, working cluster. Each such step is noted: it is a manual step the
        system should not have needed."""
        steps = []
        broken = [r for r in self.replicas if r.proc.alive() and self.missing_daemons.get(r.proc.pid)]
        for replica in broken:
            self.pids.begin(replica.proc.pid, "kill")
            await asyncio.to_thread(replica.proc.terminate, 10.0)
            await self.start_replica(replica)
            steps.append(f"restarted {replica.name} (lost daemons)")
        for zone, proc in self.standalone.items():
            if not proc.alive():
                self.pids.begin(proc.pid, "kill")
                self._start_standalone_proc(proc)
                steps.append(f"restarted standalone-{zone} (it had exited)")
        if not await self._wait_target(30):
            for preset in POOLS:
                with contextlib.suppress(RuntimeError, httpx.HTTPError):
                    await self.api_ok(
                        "POST", "/prebuilds/retry", json={"template": POOL_TEMPLATE, "preset": preset}
                    )
            steps.append("cleared the pools' backoff (prebuilds retry)")
            if not await self._wait_target(60):
                steps.append("pools still not at target 60 s later")
        if steps:
            self.current.notes.append("healed after the scenario (manual steps): " + "; ".join(steps))
            self.say("  healed: " + "; ".join(steps))

    async def _wait_target(self, timeout: float) -> bool:
        since = time.time()
        async with self.claims_paused():
            waited = await until(
                lambda: bool(
                    self.poller.latest and self.poller.latest.at > since and self.poller.latest.at_target
                ),
                timeout,
            )
        return waited is not None

    async def _probe_jobs(self, embedded: int, zones: list[str]) -> list[UUID]:
        requests = [PROBE_TEMPLATE] * embedded
        requests += [LO_TEMPLATE if z == "lo" else NS_TEMPLATE for z in zones]

        async def build(template: str) -> UUID | None:
            try:
                body = await self.api_ok(
                    "POST",
                    "/workspaces",
                    self.probe_token,
                    json={"name": self.fresh_name("probe"), "template": template},
                )
            except (RuntimeError, httpx.HTTPError):
                return None
            build_ = body.get("latest_build") or {}
            job = build_.get("job_id") or (build_.get("job") or {}).get("id")
            return UUID(str(job)) if job else None

        created = await asyncio.gather(*(build(t) for t in requests))
        return [j for j in created if j is not None]

    async def _jobs_done(self, jobs: list[UUID]) -> bool:
        try:
            rows = await self.poller.query(
                "SELECT count(*) AS n FROM provisioner_jobs WHERE id = ANY(%(ids)s) AND completed_at IS NULL",
                {"ids": jobs},
            )
        except (psycopg.Error, OSError, TimeoutError):
            return False
        return int(rows[0]["n"]) == 0

    async def daemon_metrics(self) -> str:
        """What each replica's /metrics says of its daemons, when it exports such a gauge."""
        parts = []
        for r in self.live_replicas():
            try:
                text = (await self.client.get(self.url(r) + "/metrics", timeout=3)).text
            except httpx.HTTPError:
                continue
            values = [
                line
                for line in text.splitlines()
                if not line.startswith("#") and re.match(r"prebuildd_\w*daemon\w*", line)
            ]
            if values:
                parts.append(f"{r.name}: " + "; ".join(v.replace("prebuildd_", "") for v in values[:4]))
        return " | ".join(parts)

    # -- jobs of the standalone daemons

    async def start_job(self, template: str) -> UUID:
        body = await self.api_ok(
            "POST",
            "/workspaces",
            self.probe_token,
            json={"name": self.fresh_name("job"), "template": template},
        )
        build = body.get("latest_build") or {}
        return UUID(str(build["job_id"]))

    async def job(self, job_id: UUID) -> dict[str, Any] | None:
        rows = await self._query_with_retry(
            "SELECT id, job_status, worker_id, started_at, completed_at, error FROM provisioner_jobs WHERE id = %(id)s",
            {"id": job_id},
        )
        return rows[0] if rows else None

    async def wait_job(
        self, job_id: UUID, statuses: tuple[str, ...], timeout: float
    ) -> dict[str, Any] | None:
        found: dict[str, Any] = {}

        async def reached() -> bool:
            row = await self.job(job_id)
            if row is not None and row["job_status"] in statuses:
                found.update(row)
                return True
            return False

        return found if await until(reached, timeout, 0.2) is not None else None

    # -- teardown

    async def teardown(self) -> None:
        if self._claim_task is not None:
            self._claim_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._claim_task
        for task in list(self._claims_in_flight):
            task.cancel()
        await asyncio.gather(*self._claims_in_flight, return_exceptions=True)
        await self.poller.stop()
        await self.client.aclose()
        procs = [r.proc for r in self.replicas] + list(self.standalone.values())
        await asyncio.gather(*(asyncio.to_thread(proc.terminate, 10.0) for proc in procs))
        if self.pg is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.pg.stop)
            if self.pg.pgdata.exists():
                await asyncio.to_thread(self._kill_postgres)
        if self.netns:
            teardown_netns()
        for pid in _marked_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # -- PostgreSQL

    def postmaster_pid(self) -> int | None:
        assert self.pg is not None
        try:
            return int((self.pg.pgdata / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _kill_postgres(self) -> None:
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.pg is not None
        cmd = [str(self.pg.bin("pg_ctl")), "-D", str(self.pg.pgdata), *args]
        return self.pg._run(cmd, self.pg._run_as())

    async def pg_accepts(self, timeout: float) -> bool:
        async def accepts() -> bool:
            try:
                await self.poller.query("SELECT 1")
                return True
            except (psycopg.Error, OSError, TimeoutError):
                return False

        return await until(accepts, timeout, 0.2) is not None

    def pg_backends_gone(self) -> bool:
        """No process of the killed server is left (its backends exit once they see the postmaster gone)."""
        assert self.pg is not None
        needle = str(self.pg.pgdata).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle in (entry / "cmdline").read_bytes():
                    return False
            except OSError:
                continue
        return True


# -- the scenarios -----------------------------------------------------------------------------------------


async def scenario_replica_kills(h: Harness, deadline_at: float) -> None:
    p = h.params
    stats = h.scenario("kill -9 of a replica (embedded daemons mid-job), restarted")
    mid_job = 0
    # At least `replica_kills`, and more until the run is long enough and has made enough claims (bounded).
    while stats.faults < p.replica_kills or (
        (time.time() < deadline_at or len(h.claims) < p.min_claims) and stats.faults < 4 * p.replica_kills
    ):
        victim = await _replica_with_running_job(h, timeout=5.0)
        if victim is None:
            victim = random.choice([r for r in h.replicas if r.proc.alive()])
        else:
            mid_job += 1
        h.fault_started("replica")
        h.pids.begin(victim.proc.pid, "kill")
        await asyncio.to_thread(victim.proc.kill9)
        stats.faults += 1
        await asyncio.sleep(
            random.uniform(*p.kill_down)
        )  # the fault schedule: how long the replica stays down
        ready = await h.start_replica(victim)
        h.fault_ended()
        recovery = await h.back_at_target(ready, p.replica_bound)
        stats.recoveries.append(recovery)
        h.say(
            f"  kill {stats.faults}: {victim.name} back, pools at target after "
            f"{'never' if recovery.seconds is None else f'{recovery.seconds:.1f} s'}"
        )
    stats.notes.append(f"{mid_job} of {stats.faults} kills hit a replica while one of its daemons ran a job")
    await h.check_claims()
    await h.probe_daemons()


async def _replica_with_running_job(h: Harness, timeout: float) -> Replica | None:
    found: list[Replica] = []

    async def look() -> bool:
        try:
            rows = await h.poller.query("SELECT worker_id FROM provisioner_jobs WHERE job_status = 'running'")
        except (psycopg.Error, OSError, TimeoutError):
            return False
        pids = {h.pids.worker_pid(r["worker_id"]) for r in rows}
        found[:] = [r for r in h.replicas if r.proc.alive() and r.proc.pid in pids]
        return bool(found)

    await until(look, timeout, 0.1)
    return random.choice(found) if found else None


async def scenario_pg_restart(h: Harness) -> None:
    p = h.params
    stats = h.scenario("PostgreSQL restarted (pg_ctl restart -m fast)")
    for _ in range(p.pg_restarts):
        await _replica_with_running_job(h, timeout=5.0)  # a job in flight, to catch completions on the way
        h.fault_started("database")
        # -l: the new postmaster must not inherit pg_ctl's output pipes (the call would never return).
        log_file = str(h.pg.data_dir / "postgres.log") if h.pg is not None else "/dev/null"
        result = await asyncio.to_thread(h.pg_ctl, "-l", log_file, "-m", "fast", "-w", "-t", "60", "restart")
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed: {result.stdout}{result.stderr}")
        stats.faults += 1
        if not await h.pg_accepts(60):
            raise RuntimeError("PostgreSQL did not come back after a fast restart")
        returned = time.time()
        h.fault_ended()
        stats.recoveries.append(await h.back_at_target(returned, p.pg_bound))
    await h.check_claims()
    await h.probe_daemons()


async def scenario_pg_kill(h: Harness) -> None:
    p = h.params
    stats = h.scenario(f"PostgreSQL killed -9, down {p.pg_outage:.0f} s")
    await _replica_with_running_job(h, timeout=5.0)
    pid = h.postmaster_pid()
    if pid is None:
        raise RuntimeError("no postmaster.pid")
    h.fault_started("database")
    os.kill(pid, signal.SIGKILL)
    stats.faults += 1
    await asyncio.sleep(p.pg_outage)  # the fault schedule: the outage itself
    if await until(h.pg_backends_gone, 30, 0.2) is None:
        stats.notes.append("backends of the killed server still alive 30 s after the outage")
    assert h.pg is not None
    for _ in range(5):
        try:
            await asyncio.to_thread(h.pg.start)
            break
        except RuntimeError as exc:
            stats.notes.append(f"restart of PostgreSQL failed once: {str(exc).splitlines()[0]}")
            await asyncio.sleep(1)
    if not await h.pg_accepts(60):
        raise RuntimeError("PostgreSQL did not come back after kill -9")
    returned = time.time()
    h.fault_ended()
    stats.recoveries.append(await h.back_at_target(returned, p.pg_bound))
    await h.check_claims()
    await h.probe_daemons()


async def scenario_standalone_kill(h: Harness) -> None:
    stats = h.scenario("standalone daemon killed -9 mid-job, restarted")
    stats.rejoin_label = "restarted daemon runs jobs"
    proc = h.standalone["lo"]
    job_id = await h.start_job(LO_TEMPLATE)
    running = await h.wait_job(job_id, ("running",), 30)
    if running is None or h.pids.worker_pid(running["worker_id"]) != proc.pid:
        stats.notes.append(f"the standalone daemon never ran job {job_id}: {await h.job(job_id)}")
        stats.rejoined = False
        return
    await asyncio.sleep(1.0)  # the fault schedule: kill a second into the job
    h.fault_started("standalone")
    h.pids.begin(proc.pid, "kill")
    killed_at = time.time()
    await asyncio.to_thread(proc.kill9)
    stats.faults += 1
    h._start_standalone_proc(proc)
    h.fault_ended()
    second = await h.start_job(LO_TEMPLATE)
    done = await h.wait_job(second, ("succeeded", "failed"), 60)
    stats.rejoined = bool(
        done and done["job_status"] == "succeeded" and h.pids.worker_pid(done["worker_id"]) == proc.pid
    )
    stats.notes.append(
        f"the restarted daemon ran the next job: {'yes' if stats.rejoined else 'no'} ({done and done['job_status']})"
    )
    old = await h.job(job_id)
    if old is not None and old["completed_at"] is not None:
        stats.notes.append(
            f"the killed daemon's job ended {old['job_status']} {old['completed_at'].timestamp() - killed_at:.0f} s "
            f"after the kill: {old['error']}"
        )
    else:
        stats.notes.append(
            f"the killed daemon's job is still {old and old['job_status']} at the end of the scenario; the stuck-job "
            f"check fails it if it is not failed within {h.params.stuck_running_bound:.0f} s of the kill"
        )
    h.standalone_killed_job = (job_id, killed_at)  # type: ignore[attr-defined]
    await h.probe_daemons()


async def scenario_freeze(h: Harness) -> None:
    p = h.params
    stats = h.scenario(f"SIGSTOP of the lock holder for {p.freeze:.0f} s")
    holder, how = await find_lock_holder_and_stop(h, timeout=60.0)
    if holder is None:
        stats.notes.append("no lock holder could be caught holding the lock within 60 s")
        stats.recoveries.append(Recovery(None, p.freeze_bound))
        return
    stopped_at = time.time()
    stats.faults += 1
    h.fault_started("freeze")
    stats.notes.append(f"froze {holder.name} ({how})")
    event = h.pids.begin(holder.proc.pid, "stop", stopped_at)
    # A claim makes work the reconciler must do; the time until another replica does it is what the freeze cost.
    claim_at = time.time()
    record = await h.claim(random.choice(list(POOLS)))
    if record.status != 201:
        stats.notes.append(f"the claim after the freeze failed: {record.status} {record.error}")

    async def created() -> bool:
        try:
            rows = await h.poller.query(
                NEW_PREBUILDS_SQL, {"since": datetime.fromtimestamp(claim_at).astimezone()}
            )
        except (psycopg.Error, OSError, TimeoutError):
            return False
        return int(rows[0]["n"]) > 0

    # The fault schedule: the freeze lasts its full length; a creation by another replica may come meanwhile.
    lost = await until(created, p.freeze - (time.time() - stopped_at), 0.2)
    remaining = p.freeze - (time.time() - stopped_at)
    if remaining > 0:
        await asyncio.sleep(remaining)
    holder.proc.signal(signal.SIGCONT)
    holder.frozen = False
    h.pids.end(event)
    cont_at = time.time()
    h.fault_ended()
    if lost is None:
        after = await until(created, p.freeze_bound + p.recovery_slack, 0.2)
        lost = after + (cont_at - claim_at) if after is not None else None
    stats.recoveries.append(Recovery(lost, p.freeze_bound))
    stats.notes.append(
        "reconciliation lost: "
        + (
            "never resumed"
            if lost is None
            else f"{lost:.1f} s from a claim during the freeze to the next creation"
        )
    )
    recovery = await h.back_at_target(cont_at, p.replica_bound)
    stats.notes.append(
        f"pools at target {'never' if recovery.seconds is None else f'{recovery.seconds:.1f} s'} after SIGCONT"
    )
    await h.check_claims()
    await h.probe_daemons()


async def find_lock_holder_and_stop(h: Harness, timeout: float) -> tuple[Replica | None, str]:
    """Catch the replica that holds the cycle lock and SIGSTOP it while it holds it.

    The lock is looked for three ways, so that the detection survives a change of mechanism: the advisory cycle
    lock in pg_locks (held only during a cycle today, so it is polled fast), a lease table (any table named
    *lease* with a holder column naming the replica's pid or application), and the lock-holder gauge."""
    deadline = time.monotonic() + timeout
    conn = await psycopg.AsyncConnection.connect(h.poller_url, autocommit=True, row_factory=dict_row)
    try:
        lease = await _lease_table(conn)
        while time.monotonic() < deadline:
            name = await _advisory_holder(conn)
            how = "advisory cycle lock in pg_locks"
            if name is None and lease is not None:
                name, how = await _lease_holder(h, conn, lease), f"lease table {lease[0]}"
            replica = _replica_named(h, name)
            if replica is not None:
                replica.frozen = True
                replica.proc.signal(signal.SIGSTOP)
                if how.startswith("advisory"):
                    still = await _advisory_holder(conn)
                else:
                    assert lease is not None
                    still = await _lease_holder(h, conn, lease)
                if still != name:
                    replica.proc.signal(signal.SIGCONT)  # the cycle ended before the stop: try again
                    replica.frozen = False
                    continue
                return replica, how
            if lease is None and time.monotonic() > deadline - timeout / 2:
                gauge = await _gauge_holder(h)
                if gauge is not None:
                    # Half the time spent without catching the lock in a cycle: freeze the gauge's holder anyway.
                    gauge.frozen = True
                    gauge.proc.signal(signal.SIGSTOP)
                    return gauge, "lock-holder gauge (not seen holding the advisory lock when stopped)"
            await asyncio.sleep(0.005)
        return None, ""
    finally:
        await conn.close()


def _replica_named(h: Harness, name: str | None) -> Replica | None:
    if not name:
        return None
    for r in h.replicas:
        if r.proc.alive() and (name == f"pbchaos-replica-{r.index}" or str(r.proc.pid) in name.split(":")):
            return r
    return None


async def _advisory_holder(conn: psycopg.AsyncConnection[dict[str, Any]]) -> str | None:
    cur = await conn.execute(
        ADVISORY_HOLDER_SQL, {"hi": CYCLE_LOCK_KEY >> 32, "lo": CYCLE_LOCK_KEY & 0xFFFFFFFF}
    )
    row = await cur.fetchone()
    return str(row["application_name"]) if row else None


async def _lease_table(conn: psycopg.AsyncConnection[dict[str, Any]]) -> tuple[str, list[str]] | None:
    """A lease table, if the schema has one: its name and columns."""
    cur = await conn.execute(LEASE_TABLES_SQL)
    for row in await cur.fetchall():
        columns = [str(c) for c in row["columns"]]
        if any(word in c for c in columns for word in ("holder", "owner", "replica")):
            return str(row["table_name"]), columns
    return None


async def _lease_holder(
    h: Harness, conn: psycopg.AsyncConnection[dict[str, Any]], lease: tuple[str, list[str]]
) -> str | None:
    """The application name of the replica holding an unexpired lease: through the backend pid the row names
    (``*_pid``), else through a replica's process id inside the holder's name."""
    table, columns = lease
    pid_column = next((c for c in columns if c.endswith("_pid")), None)
    expiry = next((c for c in columns if "expire" in c), None)
    where = f'WHERE "{expiry}" > now()' if expiry else ""
    if pid_column is not None:
        query = (
            f'SELECT a.application_name AS holder FROM "{table}" l '
            f'JOIN pg_stat_activity a ON a.pid = l."{pid_column}" {where.replace("WHERE ", "WHERE l.")}'
        )
        cur = await conn.execute(query)  # type: ignore[arg-type]
        for row in await cur.fetchall():
            if str(row["holder"]).startswith("pbchaos-replica-"):
                return str(row["holder"])
    name_column = next((c for c in columns if any(w in c for w in ("holder", "owner", "replica"))), None)
    if name_column is None:
        return None
    cur = await conn.execute(f'SELECT "{name_column}"::text AS holder FROM "{table}" {where}')  # type: ignore[arg-type]
    for row in await cur.fetchall():
        holder = str(row["holder"] or "")
        for r in h.replicas:
            if r.proc.alive() and re.search(rf"(?<!\d){r.proc.pid}(?!\d)", holder):
                return f"pbchaos-replica-{r.index}"
    return None


async def _gauge_holder(h: Harness) -> Replica | None:
    for r in h.live_replicas():
        try:
            text = (await h.client.get(h.url(r) + "/metrics", timeout=2)).text
        except httpx.HTTPError:
            continue
        if re.search(r"^prebuildd_reconcile_lock_holder 1(\.0)?$", text, re.MULTILINE):
            return r
    return None


async def scenario_partition(h: Harness) -> None:
    p = h.params
    stats = h.scenario(f"standalone daemon partitioned {p.partition:.0f} s (netns), reconnected")
    proc = h.standalone.get("ns")
    if proc is None:
        stats.notes.append("skipped: no network namespace on this machine")
        return
    pid_before = proc.pid
    job_id = await h.start_job(NS_TEMPLATE)
    running = await h.wait_job(job_id, ("running",), 30)
    if running is None or h.pids.worker_pid(running["worker_id"]) != proc.pid:
        stats.notes.append(f"the partitioned daemon never ran job {job_id}: {await h.job(job_id)}")
        stats.rejoined = False
        return
    h.fault_started("partition")
    event = h.pids.begin(proc.pid, "partition")
    _ip("link", "set", VETH_HOST, "down")
    stats.faults += 1
    try:
        await asyncio.sleep(p.partition)  # the fault schedule: the partition itself
    finally:
        _ip("link", "set", VETH_HOST, "up")
    h.pids.end(event)
    h.fault_ended()
    first = await h.wait_job(job_id, ("succeeded", "failed", "canceled"), p.lost_completion_bound + 10)
    second_id = await h.start_job(NS_TEMPLATE)
    second = await h.wait_job(second_id, ("succeeded", "failed"), 60)
    same_process = proc.alive() and proc.pid == pid_before
    stats.rejoined = bool(
        same_process
        and first is not None
        and first["job_status"] == "succeeded"
        and second is not None
        and second["job_status"] == "succeeded"
        and h.pids.worker_pid(second["worker_id"]) == pid_before
    )
    stats.notes.append(
        f"daemon process alive and not restarted: {same_process}; the job it held: "
        f"{first['job_status'] if first else 'still running'}; the next job: "
        f"{second['job_status'] if second else 'not done'}" + (f" by {second['worker_id']}" if second else "")
    )
    if not same_process:
        h.detail(f"standalone-ns exited during the partition:\n{proc.log_tail(8)}")
    await h.probe_daemons()


async def run_chaos(
    params: ChaosParams, workdir: Path | None = None, log: Callable[[str], None] = print
) -> ChaosReport:
    """Set up, run every scenario once (the replica kills until the run's length and claim count are reached),
    tear down; the report counts every violation."""
    with run_lock():
        h = Harness(params, workdir, log=log)
        started = time.time()
        try:
            await h.setup()
            # The replica kills fill the run up to its minimum length; about 4 minutes go to the rest.
            deadline_at = started + params.min_duration - 240
            for run in (
                functools.partial(scenario_replica_kills, h, deadline_at),
                functools.partial(scenario_standalone_kill, h),
                functools.partial(scenario_partition, h),
                functools.partial(scenario_freeze, h),
                functools.partial(scenario_pg_restart, h),
                functools.partial(scenario_pg_kill, h),
            ):
                await run()
                await h.heal()
            final = h.scenario("end of run (jobs and claims re-checked)")

            await h.check_claims()
            await _final_jobs_check(h, final)
        except Exception as exc:
            h.current.notes.append(f"run aborted: {exc!r}")
            h.details.append(f"run aborted in {h.current.name}: {exc!r}")
            aborted = ScenarioStats("run aborted")
            aborted.notes.append(repr(exc))
            aborted.rejoined = False
            aborted.rejoin_label = "run completed"
            h.scenarios.append(aborted)
        finally:
            samples = h.poller.samples
            await h.teardown()
        return ChaosReport(params, h.scenarios, h.workdir, started, time.time(), samples, h.claims, h.details)


async def _final_jobs_check(h: Harness, stats: ScenarioStats) -> None:
    """Give the last faults' jobs their bounds (a lost job must fail within the stale bound) before judging."""
    killed = getattr(h, "standalone_killed_job", None)
    if killed is not None:
        job_id, killed_at = killed
        remaining = h.params.stuck_running_bound - (time.time() - killed_at) + 2
        if remaining > 0 and h.params.form == "short":
            await h.wait_job(job_id, ("failed", "succeeded", "canceled"), remaining)
        await asyncio.sleep(1.0)  # one more poller pass over the jobs
    stats.notes.append(f"{h.poller.failures} poller samples failed (database unreachable)")


def report_json(report: ChaosReport) -> str:
    return json.dumps(
        {
            "violations": report.violations,
            "scenarios": [
                {
                    "name": s.name,
                    "faults": s.faults,
                    "over_target": s.over_target,
                    "samples": s.samples,
                    "double_claims": s.double_claims,
                    "lost_workspaces": s.lost_workspaces,
                    "lost_completions": s.lost_completions,
                    "stuck_jobs": s.stuck_jobs,
                    "daemons_lost": s.daemons_lost,
                    "recoveries": [r.seconds for r in s.recoveries],
                }
                for s in report.scenarios
            ],
        },
        indent=2,
    )
