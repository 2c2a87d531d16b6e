"""Side by side: pgqueuer draining N no-op jobs with C consumers, on the server bench/queue_throughput.py uses.

pgqueuer is never a dependency of prebuildd; run this from a throwaway venv:

    python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install 'pgqueuer==1.6.*' asyncpg
    /tmp/bench-venv/bin/python bench/compare_pgqueuer.py --postgres-url URL [--jobs N] [--consumers 16]

(or let ``bench/queue_throughput.py --pgqueuer-python /tmp/bench-venv/bin/python`` run it). Like pgqueuer's own
``tools/benchmark.py --strategy drain``: each consumer is a ``PgQueuer`` on its own connection; the URL's user
must be allowed to CREATE DATABASE. Measured from the first job run to the last: pgqueuer buffers completions
and writes them in batches, and its drain ends with a shutdown pause (about 3 s with the psycopg driver) that
says nothing about throughput; ``drain_seconds`` includes both. Every job must have run exactly once. Prints
one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
import uuid
from collections import Counter
from importlib.metadata import version
from urllib.parse import urlsplit

import asyncpg
import psycopg
from pgqueuer import AsyncpgDriver, Job, PgQueuer, PsycopgDriver, Queries
from pgqueuer.domain.types import QueueExecutionMode

OPEN: list[asyncpg.Connection | psycopg.AsyncConnection] = []


async def connect(driver: str, url: str) -> AsyncpgDriver | PsycopgDriver:
    if driver == "apg":
        OPEN.append(await asyncpg.connect(url))
        return AsyncpgDriver(OPEN[-1])
    OPEN.append(await psycopg.AsyncConnection.connect(url, autocommit=True))
    return PsycopgDriver(OPEN[-1])


def process_cpu(pid: int | None) -> float:
    """CPU seconds of ``pid`` and its exited children: for the postmaster, what its backends used."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


async def drain(args: argparse.Namespace, url: str) -> dict[str, object]:
    setup = await connect(args.driver, url)
    queries = Queries(setup)
    await queries.install()
    for start in range(0, args.jobs, 1000):
        n = min(1000, args.jobs - start)
        await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
    server = process_cpu(args.postmaster_pid)
    runs: Counter[int] = Counter()
    first, last = [float("inf")], [0.0]
    consumers = []
    for _ in range(args.consumers):
        pgq = PgQueuer(await connect(args.driver, url))

        @pgq.entrypoint("noop")
        async def noop(job: Job) -> None:
            first[0] = min(first[0], time.time())
            runs[job.id] += 1
            last[0] = time.time()

        consumers.append(pgq)
    cpu = time.process_time()
    await asyncio.gather(
        *(pgq.run(batch_size=args.batch_size, mode=QueueExecutionMode.drain) for pgq in consumers)
    )
    drained = time.time()
    cpu = time.process_time() - cpu
    for conn in OPEN[1:]:  # the consumers' backends exit, and their CPU time is counted
        await conn.close()
    await asyncio.sleep(0.5)
    server = process_cpu(args.postmaster_pid) - server
    seconds = last[0] - first[0]
    left = sum(row.count for row in await queries.queue_size())
    ok = len(runs) == args.jobs and set(runs.values()) == {1} and left == 0
    most = max(runs.values(), default=0)
    check = "ok" if ok else f"{len(runs)} distinct jobs ran, one {most} times; {left} left in the queue"
    return {
        "queue": "pgqueuer",
        "version": version("pgqueuer"),
        "driver": args.driver,
        "consumers": args.consumers,
        "batch_size": args.batch_size,
        "jobs": args.jobs,
        "seconds": round(seconds, 3),
        "drain_seconds": round(drained - first[0], 3),
        "cpu_seconds": round(cpu, 3),
        "server_cpu_seconds": round(server, 3) if args.postmaster_pid else None,
        "jobs_per_second": round(args.jobs / seconds),
        "check": check,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres-url", required=True)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--consumers", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=10, help="jobs per dequeue (pgqueuer's default 10)")
    parser.add_argument("--driver", choices=["apg", "psy"], default="apg")
    parser.add_argument("--postmaster-pid", type=int, help="local server: also measure its CPU per job")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    name = f"pgqueuer_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.postgres_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = urlsplit(args.postgres_url)._replace(path=f"/{name}").geturl()
        print(json.dumps(await drain(args, url)), flush=True)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
