"""Idle resident memory of `prebuildd server` with 10,000 prebuilds (1,000 presets) in its database.

    python bench/server_memory.py [--presets 1000]

Loads the reconcile benchmark's data set, starts the real server as a subprocess on it (3 embedded daemons, the
reconciler), waits for two reconcile cycles, then reads the process's VmRSS and VmHWM. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from prebuildd.runtime.clock import FakeClock
from prebuildd.server.embedded_pg import EmbeddedPostgres
from prebuildd.store.db import Database
from prebuildd.store.migrate import migrate
from reconcile_scale import machine, populate  # bench/ is on sys.path when run as a script


def memory(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) // 1024
    return fields


METRICS_TOKEN = secrets.token_urlsafe(24)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prebuildd-mem-"))
    embedded = EmbeddedPostgres(work / "pg")
    admin = embedded.start()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE mem")
    url = admin.rsplit("/", 1)[0] + "/mem"
    conn = await Database(url).connect()
    await migrate(conn, datetime.now(UTC))
    await conn.close()
    await populate(url, args.presets, FakeClock(datetime.now(UTC)))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prebuildd",
            "server",
            "--postgres-url",
            url,
            "--data-dir",
            str(work / "server"),
            "--http-address",
            "127.0.0.1:7399",
            "--log-level",
            "warning",
            "--reconcile-interval",
            "5s",
            "--metrics-token",
            METRICS_TOKEN,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        cycles = 0.0
        headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        async with httpx.AsyncClient(base_url="http://127.0.0.1:7399", headers=headers) as client:
            while cycles < 2 and time.monotonic() < deadline:
                try:
                    text = (await client.get("/metrics")).text
                    line = next(
                        x
                        for x in text.splitlines()
                        if x.startswith("prebuildd_reconcile_duration_seconds_count")
                    )
                    cycles = float(line.split()[-1])
                except (httpx.HTTPError, StopIteration):
                    pass
                await asyncio.sleep(0.5)
        used = memory(server.pid)
        print(f"machine: {machine()}")
        print(
            f"{args.presets} presets, {args.presets * 10} prebuilds: after {cycles:.0f} reconcile cycles, "
            f"VmRSS {used['VmRSS']} MiB, peak (VmHWM) {used['VmHWM']} MiB"
        )
    finally:
        server.terminate()
        server.wait(30)
        embedded.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
