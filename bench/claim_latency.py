"""Claim latency: p50/p95/p99 at 1, 10 and 50 concurrent claimers, through the store and through HTTP, next to
the cold-build time of the same template; and how soon the replacement job is queued after a claim.

    python bench/claim_latency.py [--claims 200] [--concurrency 1,10,50]

Starts a real server (embedded PostgreSQL, echo provisioner) in this process; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.prebuilds.claim import CreateRequest
from prebuildd.runtime.config import ServerConfig
from prebuildd.server.embedded_pg import EmbeddedPostgres
from prebuildd.server.process import OWNER_TOKEN_FILE, Server
from prebuildd.store.rows import fetch_one
from prebuildd.templates.archive import pack_directory

TEMPLATE = """
provisioner = "echo"
[echo]
start = { delay = "2s" }
[[presets]]
name = "warm"
[presets.prebuilds]
instances = {n}
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


async def refill(server: Server, url: str, n: int) -> None:
    """Wait until the pool has n ready prebuilds (the reconciler refills it)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM workspace_latest_builds WHERE owner_id = %s AND transition = 'start' "
                "AND job_status = 'succeeded'",
                (PREBUILDS_USER_ID,),
            ).fetchone()
        if row and row[0] >= n:
            return
        assert server.services is not None
        server.services.kick("bench")
        await asyncio.sleep(0.2)
    raise SystemExit("the pool did not refill in 10 minutes")


async def claim_store(server: Server, template_id: Any, preset_id: Any, owner_id: Any, name: str) -> float:
    assert server.services is not None
    started = time.perf_counter()
    services = server.services
    creator = services.workspace_creator()
    result = await creator.create_workspace(
        CreateRequest(
            organization_id=await _org(server),
            owner_id=owner_id,
            initiator_id=owner_id,
            template_id=template_id,
            name=name,
            preset_id=preset_id,
        ),
    )
    elapsed = time.perf_counter() - started
    if not result.claimed:
        raise SystemExit("a claim missed: the pool was not full")
    return elapsed


_ORG: Any = None


async def _org(server: Server) -> Any:
    global _ORG
    if _ORG is None:
        assert server.services is not None
        async with server.services.db.transaction() as conn:
            row = await fetch_one(conn, "identity.default_organization")
        assert row is not None
        _ORG = row["id"]
    return _ORG


async def claim_http(client: httpx.AsyncClient, name: str) -> float:
    started = time.perf_counter()
    response = await client.post(
        "/api/v1/workspaces", json={"name": name, "template": "bench", "preset": "warm"}
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 201 or not response.json().get("claimed"):
        raise SystemExit(f"HTTP claim failed or missed: {response.status_code} {response.text[:200]}")
    return elapsed


async def measure_level(
    server: Server,
    client: httpx.AsyncClient,
    path: str,
    level: int,
    numbers: range,
    ids: tuple[Any, Any, Any],
) -> list[float]:
    """Claim ``len(numbers)`` workspaces with ``level`` claimers at a time; the latency of each."""
    latencies: list[float] = []
    semaphore = asyncio.Semaphore(level)

    async def one(i: int) -> None:
        async with semaphore:
            name = f"{path}{level}-{i}"
            if path in ("store", "quiet"):
                latencies.append(await claim_store(server, *ids, name))
            else:
                latencies.append(await claim_http(client, name))

    await asyncio.gather(*(one(i) for i in numbers))
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--claims", type=int, default=200, help="claims per measurement")
    parser.add_argument("--concurrency", default="1,10,50")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    this = asyncio.current_task()
    assert this is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)  # SIGTERM cleans up, as Ctrl-C
    pool = max(args.claims, max(levels))
    data = Path(tempfile.mkdtemp(prefix="prebuildd-claim-bench-"))
    embedded = EmbeddedPostgres(data / "pg", settings={"max_connections": "300"})
    admin = embedded.start()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE claimbench")
    url = admin.rsplit("/", 1)[0] + "/claimbench"
    server = Server(
        ServerConfig(
            postgres_url=url,
            data_dir=data / "server",
            http_address="127.0.0.1:0",
            provisioner_daemons=8,
            reconcile_interval=3600,
            max_inflight_prebuild_jobs=500,
            db_pool_size=80,
            heartbeat_interval=5,
            log_level="warning",
        )
    )
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    services = await server.start()
    token = (data / "server" / OWNER_TOKEN_FILE).read_text().strip()
    try:
        template_dir = data / "template"
        template_dir.mkdir()
        (template_dir / "prebuildd.toml").write_text(TEMPLATE.replace("{n}", str(pool)))
        async with httpx.AsyncClient(
            base_url=server.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            limits=httpx.Limits(max_connections=100),
        ) as client:
            pushed = await client.post(
                "/api/v1/templates/bench/versions",
                params={"activate": True},
                content=pack_directory(template_dir),
                headers={"Content-Type": "application/gzip"},
            )
            assert pushed.status_code == 201, pushed.text
            async with services.db.transaction() as conn:
                owner = await fetch_one(conn, "identity.first_owner")
            assert owner is not None
            await refill(server, url, 1)  # the import ran; now wait for the whole pool
            await refill(server, url, pool)
            async with services.db.transaction() as conn:
                template = await fetch_one(
                    conn,
                    "templates.template_by_name",
                    {"organization_id": await _org(server), "name": "bench"},
                )
                assert template is not None
                preset = await fetch_one(
                    conn,
                    "templates.preset_by_name",
                    {"version_id": template["active_version_id"], "name": "warm"},
                )
            assert preset is not None
            # Cold build of the same template, for comparison: create without a preset, wait for the job.
            started = time.perf_counter()
            cold = await client.post("/api/v1/workspaces", json={"name": "cold", "template": "bench"})
            assert cold.status_code == 201, cold.text
            build_id = cold.json()["latest_build"]["id"]
            async with client.stream("GET", f"/api/v1/builds/{build_id}/logs", params={"follow": True}) as s:
                async for _ in s.aiter_lines():
                    pass
            cold_seconds = time.perf_counter() - started

            print(
                f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}; pool of {pool}, echo start delay 2 s"
            )
            print(f"cold build (create → job finished, through HTTP): {cold_seconds * 1000:.0f} ms")
            print(
                f"{'path':>6} {'claimers':>8} {'claims':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} "
                f"{'cpu/claim':>9}"
            )
            counter = 0
            # "quiet": the store path with the reconciler's kicks held back, so no replacement is built while
            # the claims run; "store" and "http" claim while the reconciler refills the pool in the same process.
            for path in ("quiet", "store", "http"):
                for level in levels:
                    await refill(server, url, pool)
                    hooks = list(services.kick_hooks)
                    if path == "quiet":
                        services.kick_hooks.clear()
                    cpu = time.process_time()
                    latencies = await measure_level(
                        server,
                        client,
                        path,
                        level,
                        range(counter, counter + args.claims),
                        (template["id"], preset["id"], owner["id"]),
                    )
                    cpu = (
                        (time.process_time() - cpu) / args.claims * 1000
                    )  # the whole process: claims and all
                    services.kick_hooks[:] = hooks
                    counter += args.claims
                    print(
                        f"{path:>6} {level:>8} {len(latencies):>6} {pct(latencies, 0.5):>6.2f}ms "
                        f"{pct(latencies, 0.95):>6.2f}ms {pct(latencies, 0.99):>6.2f}ms "
                        f"{max(latencies) * 1000:>6.2f}ms {cpu:>7.2f}ms",
                        flush=True,
                    )
            # Replacement: time from a claim to the replacement create job being queued.
            await refill(server, url, pool)
            delays = []
            for i in range(20):
                with psycopg.connect(url) as conn:
                    before = conn.execute("SELECT count(*) FROM provisioner_jobs").fetchone()
                started = time.perf_counter()
                await claim_http(client, f"replace-{i}")
                while True:
                    with psycopg.connect(url) as conn:
                        now = conn.execute("SELECT count(*) FROM provisioner_jobs").fetchone()
                    if now and before and now[0] > before[0]:
                        break
                    await asyncio.sleep(0.005)
                delays.append(time.perf_counter() - started)
            print(
                f"replacement job queued after a claim: p50 {statistics.median(delays) * 1000:.0f} ms, "
                f"max {max(delays) * 1000:.0f} ms (20 claims)"
            )
    finally:
        # Whatever happens (a stop that hangs, a SIGTERM from `timeout`), the embedded PostgreSQL goes with the
        # bench: it once stayed behind, orphaned, after every interrupted run.
        try:
            async with asyncio.timeout(60):
                await server.stop()
        finally:
            embedded.stop()
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
