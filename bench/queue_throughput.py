"""Queue throughput: workspace-build jobs per second through ``PgJobQueue`` with the ``echo`` provisioner.

    python bench/queue_throughput.py [--jobs N] [--daemons 1,4,16] [--processes 1,2] [--repeat R]
                                     [--postgres-url URL] [--pgqueuer-python /tmp/bench-venv/bin/python]

Without a URL the script starts an embedded PostgreSQL (default settings: fsync and synchronous_commit on, as the
server runs it) in a temporary directory. With a URL its user must be allowed to CREATE DATABASE: every run gets
a fresh database cloned from a prepared one (migrated, an organization and a user, an echo template with no delay
whose import has run, and N pending workspace builds created through the ``WorkspaceBuilder``), so runs do not
see each other's dead rows.

Each run starts D ``ProvisionerDaemon``s on one ``PgJobQueue`` with a ``Listener`` (the server's wiring), either
in this process or spread over P worker processes, and measures from the first acquire to the last completion.
A recording wrapper around the echo provisioner counts runs per job id; the run is valid only when every job ran
exactly once and every job succeeded. Besides jobs/s it reports CPU per job, in the daemons' processes and (on
the embedded server) in PostgreSQL: on a shared machine wall-clock figures move with the load, CPU per job much
less. With ``--pgqueuer-python`` the same runs of bench/compare_pgqueuer.py follow each round, on the same
server. Repeats go round all settings; the table shows the median and the range.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import structlog

from prebuildd.domain.jobs import Transition
from prebuildd.identity.users import create_user, ensure_default_organization
from prebuildd.provisioner.base import BuildContext, BuildResult, ImportContext, ImportResult, LogSink
from prebuildd.provisioner.daemon import DaemonOptions, ProvisionerDaemon
from prebuildd.provisioner.echo import EchoProvisioner
from prebuildd.queue.pg import PgJobQueue
from prebuildd.queue.port import AcquiredJob, Heartbeat, JobOutcome, LogLine
from prebuildd.runtime.clock import SystemClock
from prebuildd.server.embedded_pg import EmbeddedPostgres
from prebuildd.store import channels
from prebuildd.store.db import Database
from prebuildd.store.listener import Listener
from prebuildd.store.migrate import migrate
from prebuildd.templates.archive import pack_directory
from prebuildd.templates.versions import push_version
from prebuildd.workspaces.builder import BuildRequest, WorkspaceBuilder

ECHO_MANIFEST = 'provisioner = "echo"\n'
ENQUEUE_BATCH = 500
"""Builds created per transaction while preparing (several transactions run concurrently)."""
ENQUEUE_CONCURRENCY = 4


# -- measuring ---------------------------------------------------------------------------------------------


class RecordingEcho:
    """The echo provisioner, counting how many times each job ran."""

    kind = "echo"
    needs_files = EchoProvisioner.needs_files
    """As the provisioner it wraps: echo reads no files, so its jobs get no scratch directory (without this the
    bench measured a mkdtemp and an rmtree per job that the echo provisioner never costs)."""

    def __init__(self) -> None:
        self.echo = EchoProvisioner()
        self.runs: Counter[str] = Counter()

    async def run_build(self, ctx: BuildContext, log: LogSink) -> BuildResult:
        self.runs[ctx.job_id] += 1
        return await self.echo.run_build(ctx, log)

    async def import_version(self, ctx: ImportContext, log: LogSink) -> ImportResult:
        return await self.echo.import_version(ctx, log)


@dataclass
class WorkerResult:
    runs: Counter[str] = field(default_factory=Counter)
    first_acquire: float = float("inf")
    last_complete: float = 0.0
    completed: int = 0
    cpu: float = 0.0
    """CPU seconds of the daemons' process(es) while they ran."""

    def to_json(self) -> str:
        data = {"runs": dict(self.runs), "first": self.first_acquire, "last": self.last_complete}
        return json.dumps(data | {"completed": self.completed, "cpu": self.cpu})

    @classmethod
    def from_json(cls, text: str) -> WorkerResult:
        data = json.loads(text)
        return cls(Counter(data["runs"]), data["first"], data["last"], data["completed"], data["cpu"])

    def merge(self, other: WorkerResult) -> None:
        self.runs.update(other.runs)
        self.first_acquire = min(self.first_acquire, other.first_acquire)
        self.last_complete = max(self.last_complete, other.last_complete)
        self.completed += other.completed
        self.cpu += other.cpu


class TimedQueue:
    """A ``JobQueue`` around ``PgJobQueue`` that notes the first acquire and the last completion, and stops a
    daemon once the queue is empty (every job was queued before the run, so an empty queue stays empty)."""

    def __init__(self, inner: PgJobQueue, result: WorkerResult) -> None:
        self.inner = inner
        self.result = result
        self.daemons: dict[str, ProvisionerDaemon] = {}

    async def register(self, identity: str, worker_id: str) -> list[UUID]:
        return await self.inner.register(identity, worker_id)

    async def acquire(
        self, worker_id: str, kinds: Sequence[str], tags: Mapping[str, str]
    ) -> AcquiredJob | None:
        started = time.time()
        job = await self.inner.acquire(worker_id, kinds, tags)
        if job is None:
            self.daemons[worker_id].stop()
        else:
            self.result.first_acquire = min(self.result.first_acquire, started)
        return job

    async def wait_for_jobs(
        self,
        timeout: float,
        *,
        kinds: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
        worker_id: str | None = None,
    ) -> None:
        await self.inner.wait_for_jobs(timeout, kinds=kinds, tags=tags, worker_id=worker_id)

    @property
    def wakes_waiters(self) -> bool:
        return bool(getattr(self.inner, "wakes_waiters", False))

    async def heartbeat(self, job_id: UUID, worker_id: str) -> Heartbeat:
        return await self.inner.heartbeat(job_id, worker_id)

    async def append_logs(self, job_id: UUID, worker_id: str, lines: Sequence[LogLine]) -> None:
        await self.inner.append_logs(job_id, worker_id, lines)

    async def complete(self, job_id: UUID, worker_id: str, outcome: JobOutcome) -> bool:
        done = await self.inner.complete(job_id, worker_id, outcome)
        self.result.last_complete = time.time()
        self.result.completed += done
        return done


async def run_daemons(
    url: str, daemons: int, work_root: Path, ready: asyncio.Future[None] | None
) -> WorkerResult:
    """Run ``daemons`` daemons in this event loop until the queue is empty; ``ready`` gates the start."""
    db = await Database(url, min_size=daemons + 2, max_size=daemons + 4, name="bench").open()
    listener = Listener(db, channels.ALL)
    await listener.start()
    result = WorkerResult()
    queue = TimedQueue(PgJobQueue(db, SystemClock(), listener), result)
    recording = RecordingEcho()
    fleet = []
    for i in range(daemons):
        options = DaemonOptions(name=f"bench-{i}", work_root=work_root, data_dir=work_root / "data")
        daemon = ProvisionerDaemon(queue, {"echo": recording}, options)
        queue.daemons[daemon.worker_id] = daemon
        fleet.append(daemon)
    try:
        if ready is not None:
            await ready
        cpu = time.process_time()
        await asyncio.gather(*(daemon.run() for daemon in fleet))
        result.cpu = time.process_time() - cpu
    finally:
        await listener.stop()
        await db.close()
    result.runs = recording.runs
    return result


async def worker_main(url: str, daemons: int, work_root: Path) -> None:
    """A worker process: say ready, wait for a line on stdin, run, print the result as JSON."""
    loop = asyncio.get_running_loop()
    go: asyncio.Future[None] = loop.create_future()

    async def wait_for_go() -> None:
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        go.set_result(None)

    waiter = asyncio.create_task(wait_for_go())
    result = await run_daemons(url, daemons, work_root, go)
    await waiter
    print(result.to_json(), flush=True)


async def run_in_processes(url: str, daemons: int, processes: int, work_root: Path) -> WorkerResult:
    shares = [daemons // processes + (1 if i < daemons % processes else 0) for i in range(processes)]
    procs = []
    for share in shares:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--worker",
            "--postgres-url",
            url,
            "--daemons",
            str(share),
            "--work-root",
            str(work_root),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
    for proc in procs:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"worker did not start: {line!r}")
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
    result = WorkerResult()
    for proc in procs:
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"worker failed with exit code {proc.returncode}")
        result.merge(WorkerResult.from_json(out.decode().strip().splitlines()[-1]))
    return result


# -- preparing ---------------------------------------------------------------------------------------------


def _database_url(url: str, name: str) -> str:
    return psycopg.conninfo.make_conninfo(url, dbname=name)


def _admin(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


async def prepare(admin_url: str, name: str, jobs: int, tmp: Path) -> list[UUID]:
    """Create database ``name`` with the schema, an echo template and ``jobs`` pending builds."""
    _admin(admin_url, f'CREATE DATABASE "{name}"')
    url = _database_url(admin_url, name)
    clock = SystemClock()
    db = await Database(url, min_size=1, max_size=ENQUEUE_CONCURRENCY + 1).open()
    try:
        conn = await db.connect()
        try:
            await migrate(conn, clock.now())
        finally:
            await conn.close()
        org = await ensure_default_organization(db, clock)
        user = await create_user(db, clock, username="bench", organization_id=org.id)
        template_dir = tmp / "template"
        template_dir.mkdir(exist_ok=True)
        (template_dir / "prebuildd.toml").write_text(ECHO_MANIFEST)
        pushed = await push_version(
            db,
            clock,
            organization_id=org.id,
            template_name="bench",
            archive=pack_directory(template_dir),
            created_by=user.id,
            activate=True,
        )
        queue = PgJobQueue(db, clock)
        importer = ProvisionerDaemon(queue, {"echo": EchoProvisioner()}, DaemonOptions(work_root=tmp))
        job = await queue.acquire(importer.worker_id, importer.kinds, {})
        assert job is not None and job.id == pushed.job_id
        await importer.run_job(job)

        builder = WorkspaceBuilder(clock)
        job_ids: list[UUID] = []

        async def enqueue(numbers: range) -> None:
            async with db.transaction() as conn:
                for i in numbers:
                    request = BuildRequest(
                        transition=Transition.START,
                        initiator_id=user.id,
                        owner_id=user.id,
                        template_id=pushed.template_id,
                        name=f"bench-{i}",
                    )
                    job_ids.append((await builder.build(conn, request)).job_id)

        batches = [range(i, min(i + ENQUEUE_BATCH, jobs)) for i in range(0, jobs, ENQUEUE_BATCH)]
        for start in range(0, len(batches), ENQUEUE_CONCURRENCY):
            await asyncio.gather(*(enqueue(b) for b in batches[start : start + ENQUEUE_CONCURRENCY]))
        async with db.transaction() as conn:
            await conn.execute("ANALYZE")
    finally:
        await db.close()
    return job_ids


async def verify(url: str, job_ids: list[UUID], result: WorkerResult) -> str:
    """'ok', or what is wrong: every job must have run exactly once and succeeded."""
    problems = []
    expected = {str(j) for j in job_ids}
    twice = sum(1 for n in result.runs.values() if n > 1)
    missing = len(expected - set(result.runs))
    if twice:
        problems.append(f"{twice} jobs ran more than once")
    if missing:
        problems.append(f"{missing} jobs never ran")
    if set(result.runs) - expected:
        problems.append("unknown jobs ran")
    conn = await psycopg.AsyncConnection.connect(url)
    try:
        cur = await conn.execute(
            "SELECT job_status, count(*) FROM provisioner_jobs WHERE type = 'workspace_build' GROUP BY 1"
        )
        statuses = dict(await cur.fetchall())
    finally:
        await conn.close()
    if statuses != {"succeeded": len(job_ids)}:
        problems.append(f"job statuses {statuses}")
    if result.completed != len(job_ids):
        problems.append(f"{result.completed} completions accepted")
    return "; ".join(problems) or "ok"


# -- reporting ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def postgres_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_setting('server_version'), current_setting('fsync')").fetchone()
        commit = conn.execute("SELECT current_setting('synchronous_commit')").fetchone()
    assert row is not None and commit is not None
    return f"{row[0]} (fsync={row[1]}, synchronous_commit={commit[0]})"


@dataclass
class Result:
    """One setting's runs: prebuildd with D daemons in P processes, or pgqueuer with C consumers."""

    queue: str
    workers: int
    processes: int
    jobs: int
    rates: list[float] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    """CPU milliseconds per job in the queue's client processes (daemons, consumers)."""
    server_cpu: list[float] = field(default_factory=list)
    """CPU milliseconds per job in PostgreSQL (embedded server only)."""

    def add(self, seconds: float, check: str, client_cpu: float, server_cpu: float | None) -> None:
        self.rates.append(self.jobs / seconds)
        self.checks.append(check)
        self.client_cpu.append(1000 * client_cpu / self.jobs)
        if server_cpu is not None:
            self.server_cpu.append(1000 * server_cpu / self.jobs)
        print(
            f"  {self.queue}, {self.workers} x {self.processes}: {self.rates[-1]:6.0f} jobs/s, "
            f"client CPU {self.client_cpu[-1]:.2f} ms/job, {check}",
            flush=True,
        )

    def row(self) -> str:
        bad = [c for c in self.checks if c != "ok"]
        check = "yes" if not bad else "; ".join(bad)
        spread = f"{min(self.rates):.0f}–{max(self.rates):.0f}"
        server = f"{statistics.median(self.server_cpu):.2f}" if self.server_cpu else "–"
        return (
            f"| {self.queue} | {self.workers} | {self.processes} | {self.jobs} | "
            f"**{statistics.median(self.rates):.0f}** | {spread} | "
            f"{statistics.median(self.client_cpu):.2f} | {server} | {check} |"
        )


class ServerCpu:
    """CPU seconds used by the embedded server's backends, read from the postmaster's children times (a backend's
    time is counted once it has exited; every run closes its connections before the reading)."""

    def __init__(self, embedded: EmbeddedPostgres | None) -> None:
        self.pid = None
        if embedded is not None:
            self.pid = int((embedded.pgdata / "postmaster.pid").read_text().split()[0])

    async def seconds(self) -> float | None:
        if self.pid is None:
            return None
        await asyncio.sleep(0.5)  # let the run's backends exit and be reaped
        return _process_cpu(self.pid)


def _process_cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` and of its children that have exited (/proc/PID/stat, fields 14-17)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


async def bench(args: argparse.Namespace, admin_url: str, tmp: Path, server: ServerCpu) -> list[Result]:
    tag = uuid.uuid4().hex[:8]
    prepared = f"prebuildd_bench_{tag}"
    started = time.perf_counter()
    job_ids = await prepare(admin_url, prepared, args.jobs, tmp)
    print(f"prepared {args.jobs} pending builds in {time.perf_counter() - started:.1f} s", flush=True)
    settings = [(d, p) for p in args.processes for d in args.daemons if p <= d]
    ours = {s: Result("prebuildd (echo)", s[0], s[1], args.jobs) for s in settings}
    theirs = {v: Result(_pgqueuer_name(*v), args.pgqueuer_consumers, 1, args.jobs) for v in PGQUEUER_VARIANTS}
    try:
        # Repeats go round all settings (ours, then pgqueuer's), so that a change in the machine's load
        # spreads over all of them.
        for repeat in range(args.repeat):
            for daemons, processes in settings:
                name = f"{prepared}_{daemons}_{processes}_{repeat}"
                _admin(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{prepared}"')
                before = await server.seconds()
                try:
                    url = _database_url(admin_url, name)
                    run, check = await run_prebuildd(url, job_ids, daemons, processes, tmp)
                    after = await server.seconds()
                finally:
                    _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                server_cpu = None if before is None or after is None else after - before
                seconds = run.last_complete - run.first_acquire
                ours[daemons, processes].add(seconds, check, run.cpu, server_cpu)
            if args.pgqueuer_python:
                for variant, result in theirs.items():
                    await run_pgqueuer(args, admin_url, variant, result, server)
    finally:
        _admin(admin_url, f'DROP DATABASE IF EXISTS "{prepared}" WITH (FORCE)')
    return list(ours.values()) + (list(theirs.values()) if args.pgqueuer_python else [])


async def run_prebuildd(
    url: str, job_ids: list[UUID], daemons: int, processes: int, tmp: Path
) -> tuple[WorkerResult, str]:
    """Drain the queue in database ``url`` with the daemons; what they did, and the exactly-once check."""
    work = Path(tempfile.mkdtemp(prefix="work-", dir=tmp))
    try:
        if processes == 1:
            result = await run_daemons(url, daemons, work, None)
        else:
            result = await run_in_processes(url, daemons, processes, work)
        return result, await verify(url, job_ids, result)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- idle daemons: pick-up latency and the database's load ---------------------------------------------------


class StartRecorder:
    """The echo provisioner, noting when each job started (the daemon's start of the build)."""

    kind = "echo"

    def __init__(self) -> None:
        self.echo = EchoProvisioner()
        self.started: dict[str, float] = {}
        self.runs: Counter[str] = Counter()

    async def run_build(self, ctx: BuildContext, log: LogSink) -> BuildResult:
        self.started.setdefault(ctx.job_id, time.perf_counter())
        self.runs[ctx.job_id] += 1
        return await self.echo.run_build(ctx, log)

    async def import_version(self, ctx: ImportContext, log: LogSink) -> ImportResult:
        return await self.echo.import_version(ctx, log)


@dataclass
class IdleResult:
    daemons: int
    idle_seconds: float
    commits_per_s: float
    """``xact_commit`` of the run's database per second while every daemon was idle (the server's counter)."""
    acquires_per_s: float
    """Acquire calls of the daemons per second while idle (counted in the client)."""
    polls_per_s: float
    """The process's polls for pending jobs per second while idle."""
    latencies_ms: list[float]
    check: str


async def _xact_commit(conn: psycopg.AsyncConnection[tuple[int]], name: str) -> int:
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    cur = await conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (name,))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def run_idle(
    url: str, name: str, daemons: int, jobs: int, gap: float, idle_seconds: float, tmp: Path
) -> IdleResult:
    """D daemons on one queue and listener (the server's wiring), all idle: count the database's commits and
    the client's statements for ``idle_seconds``; then queue ``jobs`` jobs one at a time, ``gap`` seconds
    apart, each with its notification, and time each from the enqueue statement's send to the daemon's start of
    the build. The prepared database's pending builds are hidden first (another provisioner name) and come back
    one per enqueue."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE provisioner_jobs SET provisioner = 'held' WHERE job_status = 'pending' AND provisioner = 'echo'"
        )
    db = await Database(url, min_size=2, max_size=daemons + 4, name="bench-idle").open()
    listener = Listener(db, channels.ALL)
    await listener.start()
    queue = PgJobQueue(db, SystemClock(), listener, poll_interval=2.0)
    acquires = 0
    inner_acquire = queue.acquire

    async def counting_acquire(
        worker_id: str, kinds: Sequence[str], tags: Mapping[str, str]
    ) -> AcquiredJob | None:
        nonlocal acquires
        acquires += 1
        return await inner_acquire(worker_id, kinds, tags)

    queue.acquire = counting_acquire  # type: ignore[method-assign]
    polls = 0
    from prebuildd.store import jobs as jobs_store

    inner_pending = jobs_store.pending_kinds

    async def counting_pending(conn: Any) -> Any:
        nonlocal polls
        polls += 1
        return await inner_pending(conn)

    jobs_store.pending_kinds = counting_pending  # type: ignore[assignment]
    recorder = StartRecorder()
    work = Path(tempfile.mkdtemp(prefix="idle-", dir=tmp))
    fleet = [
        ProvisionerDaemon(
            queue,
            {"echo": recorder},
            DaemonOptions(name=f"idle-{i}", work_root=work, data_dir=work / "data", poll_interval=2.0),
        )
        for i in range(daemons)
    ]
    tasks = [asyncio.create_task(d.run()) for d in fleet]
    sent: dict[str, float] = {}
    try:
        # Every daemon registered and waiting, and the backends' statistics of that start flushed (an idle
        # backend sends its counts up to about 10 s later: they would be counted in the idle window).
        await asyncio.sleep(12.0)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            commits0, acquires0, polls0, t0 = (
                await _xact_commit(conn, name),
                acquires,
                polls,
                time.perf_counter(),
            )
            await asyncio.sleep(idle_seconds)
            commits1, acquires1, polls1, t1 = (
                await _xact_commit(conn, name),
                acquires,
                polls,
                time.perf_counter(),
            )
            for _ in range(jobs):
                started = time.perf_counter()
                cur = await conn.execute(
                    "WITH j AS (UPDATE provisioner_jobs SET provisioner = 'echo', created_at = now() WHERE id = ("
                    "  SELECT id FROM provisioner_jobs WHERE provisioner = 'held' AND job_status = 'pending'"
                    "  ORDER BY created_at LIMIT 1) RETURNING id) "
                    "SELECT j.id::text, pg_notify('prebuildd_job_queued', 'echo') FROM j"
                )
                row = await cur.fetchone()
                assert row is not None
                sent[row[0]] = started
                await asyncio.sleep(gap)
            deadline = time.perf_counter() + 30
            while len(recorder.started) < jobs and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        for d in fleet:
            d.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        jobs_store.pending_kinds = inner_pending  # type: ignore[assignment]
        await listener.stop()
        await db.close()
        shutil.rmtree(work, ignore_errors=True)
    latencies = [1000 * (recorder.started[j] - t) for j, t in sent.items() if j in recorder.started]
    problems = []
    if len(latencies) != jobs:
        problems.append(f"{jobs - len(latencies)} jobs never started")
    if any(n > 1 for n in recorder.runs.values()):
        problems.append("a job ran more than once")
    dt = t1 - t0
    # The two readings are the measuring connection's own commits.
    return IdleResult(
        daemons,
        dt,
        (commits1 - commits0 - 2) / dt,
        (acquires1 - acquires0) / dt,
        (polls1 - polls0) / dt,
        latencies,
        "; ".join(problems) or "ok",
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def idle_bench(args: argparse.Namespace, admin_url: str, tmp: Path) -> list[IdleResult]:
    tag = uuid.uuid4().hex[:8]
    prepared = f"prebuildd_idle_{tag}"
    await prepare(admin_url, prepared, args.pickup_jobs, tmp)
    out = []
    try:
        for repeat in range(args.repeat):
            for daemons in args.idle:
                name = f"{prepared}_{daemons}_{repeat}"
                _admin(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{prepared}"')
                try:
                    r = await run_idle(
                        _database_url(admin_url, name),
                        name,
                        daemons,
                        args.pickup_jobs,
                        args.pickup_gap,
                        args.idle_seconds,
                        tmp,
                    )
                finally:
                    _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                print(
                    f"  idle {daemons} daemons: {r.commits_per_s:.2f} commits/s, {r.acquires_per_s:.2f} acquires/s, "
                    f"{r.polls_per_s:.2f} polls/s; pick-up p50 {_percentile(r.latencies_ms, 0.5):.1f} ms, "
                    f"p99 {_percentile(r.latencies_ms, 0.99):.1f} ms; {r.check}",
                    flush=True,
                )
                out.append(r)
    finally:
        _admin(admin_url, f'DROP DATABASE IF EXISTS "{prepared}" WITH (FORCE)')
    return out


def print_idle(results: list[IdleResult], args: argparse.Namespace) -> None:
    print()
    print(
        f"Idle daemons: {args.idle_seconds:.0f} s idle, then {args.pickup_jobs} jobs queued "
        f"{1000 * args.pickup_gap:.0f} ms apart (pick-up: enqueue statement sent -> the daemon starts the build)"
    )
    print()
    print(
        "| idle daemons | commits/s (pg_stat_database) | acquires/s | polls/s | pick-up p50 | pick-up p99 "
        "| pick-up max | each job ran once |"
    )
    print("|--:|--:|--:|--:|--:|--:|--:|:--|")
    for r in results:
        lat = r.latencies_ms or [float("nan")]
        print(
            f"| {r.daemons} | {r.commits_per_s:.2f} | {r.acquires_per_s:.2f} | {r.polls_per_s:.2f} | "
            f"{_percentile(lat, 0.5):.1f} ms | {_percentile(lat, 0.99):.1f} ms | {max(lat):.1f} ms | "
            f"{'yes' if r.check == 'ok' else r.check} |"
        )


PGQUEUER_VARIANTS = [("apg", 10), ("apg", 1), ("psy", 10)]
"""Driver and jobs per dequeue: pgqueuer's defaults (asyncpg, 10), one job per dequeue as a prebuildd daemon
takes them, and prebuildd's driver (psycopg)."""


def _pgqueuer_name(driver: str, batch: int, version: str = "") -> str:
    name = "asyncpg" if driver == "apg" else "psycopg"
    return f"pgqueuer{version} ({name}, {batch} per dequeue)"


async def run_pgqueuer(
    args: argparse.Namespace, admin_url: str, variant: tuple[str, int], result: Result, server: ServerCpu
) -> None:
    """One run of bench/compare_pgqueuer.py in the Python that has pgqueuer."""
    driver, batch = variant
    script = Path(__file__).with_name("compare_pgqueuer.py")
    command = [args.pgqueuer_python, str(script), "--postgres-url", admin_url, "--jobs", str(args.jobs)]
    command += ["--consumers", str(args.pgqueuer_consumers), "--batch-size", str(batch), "--driver", driver]
    if server.pid is not None:
        command += ["--postmaster-pid", str(server.pid)]
    proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} failed with exit code {proc.returncode}")
    data = json.loads(out.decode().strip().splitlines()[-1])
    result.queue = _pgqueuer_name(driver, batch, " " + data["version"])
    result.add(data["seconds"], data["check"], data["cpu_seconds"], data["server_cpu_seconds"])


def print_report(results: list[Result], pg: str, args: argparse.Namespace, load: tuple[float, ...]) -> None:
    print()
    print(f"Machine:    {cpu_model()}, {os.cpu_count()} cores, Linux {platform.release()}")
    python = f"{platform.python_version()} ({platform.python_implementation()})"
    print(f"Python:     {python}, psycopg {psycopg.__version__}")
    print(f"PostgreSQL: {pg}")
    print(f"Load:       {' '.join(f'{x:.2f}' for x in load)} (1, 5, 15 min averages before the runs)")
    print(
        f"Runs:       {args.repeat} per setting, {args.jobs} jobs each; jobs/s is the median, then the range"
    )
    print()
    print(
        "| queue | daemons/consumers | processes | jobs | jobs/s | range | client CPU ms/job "
        "| PostgreSQL CPU ms/job | each job ran exactly once |"
    )
    print("|:--|--:|--:|--:|--:|--:|--:|--:|:--|")
    for result in results:
        print(result.row())


def configure_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=5000, help="builds queued before each run (default 5000)")
    parser.add_argument("--daemons", type=_ints, default=[1, 4, 16], help="daemon counts (default 1,4,16)")
    parser.add_argument("--processes", type=_ints, default=[1, 2], help="process counts (default 1,2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting (default 1)")
    parser.add_argument("--postgres-url", help="a server whose user may CREATE DATABASE (default: embedded)")
    parser.add_argument("--log-level", default="warning", help="prebuildd log level (default warning)")
    parser.add_argument(
        "--pgqueuer-python",
        help="a Python with pgqueuer installed: also run bench/compare_pgqueuer.py on the same server",
    )
    parser.add_argument("--pgqueuer-consumers", type=int, default=16, help="pgqueuer consumers (default 16)")
    parser.add_argument(
        "--idle", type=_ints, default=[], help="idle daemon counts for pick-up latency and load (e.g. 16,64)"
    )
    parser.add_argument("--idle-only", action="store_true", help="only the idle-daemon measurement")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="idle window (default 20 s)")
    parser.add_argument("--pickup-jobs", type=int, default=100, help="jobs queued one by one (default 100)")
    parser.add_argument("--pickup-gap", type=float, default=0.1, help="seconds between them (default 0.1)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work-root", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    configure_logging(args.log_level)
    if args.worker:
        asyncio.run(worker_main(args.postgres_url, args.daemons[0], args.work_root))
        return
    tmp = Path(tempfile.mkdtemp(prefix="prebuildd-bench-"))
    embedded = None
    try:
        admin_url = args.postgres_url
        if admin_url is None:
            embedded = EmbeddedPostgres(tmp / "pg")
            admin_url = embedded.start()
            print(f"embedded PostgreSQL at {admin_url}", flush=True)
        pg = postgres_version(admin_url)
        load = os.getloadavg()
        if not args.idle_only:
            results = asyncio.run(bench(args, admin_url, tmp, ServerCpu(embedded)))
            print_report(results, pg, args, load)
        if args.idle:
            idle = asyncio.run(idle_bench(args, admin_url, tmp))
            print_idle(idle, args)
    finally:
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
