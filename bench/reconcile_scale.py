"""Reconcile cycle cost at scale: a no-op cycle and a full cycle at 100, 1,000 and 5,000 presets.

Each preset has 10 ready prebuilds, every tenth has 2 failed prebuilds, and every preset has a deleted prebuild
in its history. Prints cycle time, queries per cycle and time spent in the database. Not a test: run it.

    python bench/reconcile_scale.py [--presets 100,1000,5000] [--rounds N] [--no-full] [--profile]
                                    [--postgres-url URL]

"cpu" is the process's CPU time per no-op cycle (the reconciler's Python side, psycopg included; not PostgreSQL's):
it moves much less than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import platform
import pstats
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import structlog

from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.identity.users import create_user, ensure_default_organization
from prebuildd.prebuilds.loop import Reconciler
from prebuildd.queue.pg import PgJobQueue
from prebuildd.runtime.clock import FakeClock
from prebuildd.runtime.config import ServerConfig
from prebuildd.runtime.metrics import Metrics
from prebuildd.server.embedded_pg import EmbeddedPostgres
from prebuildd.store import channels
from prebuildd.store import pool_history as pool_history_store
from prebuildd.store import prebuilds as reconciler_store
from prebuildd.store.db import Database
from prebuildd.store.listener import Listener
from prebuildd.store.migrate import migrate
from prebuildd.workspaces.builder import WorkspaceBuilder

FIXTURE = (Path(__file__).parent / "scale_fixture.sql").read_text()
PREBUILDS_PER_PRESET = 10


class Counting:
    """Counts statements and time spent waiting on the database by the reconciler's store calls (the row helpers
    of its repositories, ``store.prebuilds`` and ``store.pool_history``: one statement per call)."""

    def __init__(self) -> None:
        self.queries = 0
        self.db_seconds = 0.0
        self._originals: dict[str, Any] = {}

    def install(self) -> None:
        for module in (reconciler_store, pool_history_store):
            for name in ("fetch_one", "fetch_all", "fetch_all_as", "fetch_tuples", "execute"):
                if not hasattr(module, name):
                    continue
                original = getattr(module, name)
                self._originals[f"{module.__name__}.{name}"] = original

                async def wrapped(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                    self.queries += 1
                    started = time.perf_counter()
                    try:
                        return await _original(*args, **kwargs)
                    finally:
                        self.db_seconds += time.perf_counter() - started

                setattr(module, name, wrapped)

    def reset(self) -> None:
        self.queries = 0
        self.db_seconds = 0.0


async def populate(url: str, presets: int, clock: FakeClock) -> None:
    db = await Database(url, min_size=1, max_size=2).open()
    try:
        org = await ensure_default_organization(db, clock)
        await create_user(db, clock, username="developer")
        templates = max(presets // 10, 1)
        params = {
            "org": org.id,
            "now": clock.now(),
            "earlier": clock.now() - timedelta(hours=2),
            "templates": templates,
            "presets_per_template": presets // templates,
            "prebuilds": PREBUILDS_PER_PRESET,
            "prebuilds_user": PREBUILDS_USER_ID,
            "source": b"bench",
        }
        with psycopg.connect(url, autocommit=False) as conn:
            for statement in FIXTURE.split(";\n"):
                body = "\n".join(line for line in statement.splitlines() if not line.startswith("--")).strip()
                if body:
                    conn.execute(body, {k: v for k, v in params.items() if f"%({k})s" in body})  # type: ignore[arg-type]
            conn.commit()
    finally:
        await db.close()


async def measure(
    url: str, presets: int, rounds: int, *, full: bool = True, profile: bool = False
) -> dict[str, Any]:
    clock = FakeClock(datetime(2026, 11, 26, 12, 0, tzinfo=UTC))
    await populate(url, presets, clock)
    db = await Database(url, min_size=2, max_size=20).open()
    counting = Counting()
    counting.install()
    try:
        rec = Reconciler.build(
            config=ServerConfig(
                postgres_url=url, data_dir=Path(tempfile.gettempdir()), max_inflight_prebuild_jobs=10**6
            ),
            db=db,
            clock=clock,
            builder=WorkspaceBuilder(clock),
            queue=PgJobQueue(db, clock),
            metrics=Metrics(),
            listener=Listener(db, channels.ALL),
        )
        await (
            rec.run_cycle()
        )  # first cycle: stores hard-limit statuses of the failed presets, records decisions
        noop: list[float] = []
        noop_db: list[float] = []
        noop_cpu: list[float] = []
        queries = 0
        profiler = cProfile.Profile() if profile else None
        for _ in range(rounds):
            counting.reset()
            cpu = time.process_time()
            if profiler is not None:
                profiler.enable()
            result = await rec.run_cycle()
            if profiler is not None:
                profiler.disable()
            noop_cpu.append(time.process_time() - cpu)
            assert result is not None and result.created == 0 and result.deleted == 0, "not a no-op cycle"
            noop.append(result.duration)
            noop_db.append(counting.db_seconds)
            queries = counting.queries
        if profiler is not None:
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
        summary = {
            "presets": presets,
            "prebuilds": presets * PREBUILDS_PER_PRESET,
            "noop_p50_ms": statistics.median(noop) * 1000,
            "noop_max_ms": max(noop) * 1000,
            "noop_db_ms": statistics.median(noop_db) * 1000,
            "noop_cpu_ms": statistics.median(noop_cpu) * 1000,
            "noop_queries": queries,
            "full_ms": float("nan"),
            "full_created": 0,
            "full_queries": 0,
            "full_db_ms": float("nan"),
        }
        if not full:
            return summary
        # A full cycle: one prebuild of every preset claimed away, so every preset creates one.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "UPDATE workspaces SET owner_id = (SELECT id FROM users WHERE NOT is_system LIMIT 1) "
                "WHERE id IN (SELECT DISTINCT ON (b.preset_id) w.id FROM workspaces w "
                "JOIN workspace_builds b ON b.workspace_id = w.id WHERE w.owner_id = %s AND NOT w.deleted "
                "AND b.build_number = w.latest_build_number AND b.transition = 'start' ORDER BY b.preset_id)",
                (PREBUILDS_USER_ID,),
            )
        counting.reset()
        full = await rec.run_cycle()
        assert full is not None
        summary.update(
            full_ms=full.duration * 1000,
            full_created=full.created,
            full_queries=counting.queries,
            full_db_ms=counting.db_seconds * 1000,
        )
        return summary
    finally:
        await db.close()


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="100,1000,5000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--no-full", action="store_true", help="skip the full cycle (no-op cycles only)")
    parser.add_argument("--profile", action="store_true", help="cProfile the no-op cycles (to stderr)")
    args = parser.parse_args()
    # The cycle's own log lines (one per create in the full cycle) would swamp the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    embedded = None
    admin = args.postgres_url
    if admin is None:
        embedded = EmbeddedPostgres(
            Path(tempfile.mkdtemp(prefix="prebuildd-bench-")),
            settings={"fsync": "off", "synchronous_commit": "off"},
        )
        admin = embedded.start()
    print(f"machine: {machine()}")
    print(
        f"{'presets':>8} {'prebuilds':>9} {'no-op p50':>10} {'no-op max':>10} {'db':>8} {'cpu':>8} {'queries':>7} "
        f"{'full cycle':>11} {'creates':>7} {'queries':>7} {'db':>8}"
    )
    try:
        for n in (int(x) for x in args.presets.split(",")):
            name = f"bench_{n}"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name}")  # type: ignore[arg-type]
                conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
            url = admin.rsplit("/", 1)[0] + f"/{name}"
            conn2 = await Database(url).connect()
            await migrate(conn2, datetime.now(UTC))
            await conn2.close()
            r = await measure(url, n, args.rounds, full=not args.no_full, profile=args.profile)
            print(
                f"{r['presets']:>8} {r['prebuilds']:>9} {r['noop_p50_ms']:>8.1f}ms {r['noop_max_ms']:>8.1f}ms "
                f"{r['noop_db_ms']:>6.1f}ms {r['noop_cpu_ms']:>6.1f}ms {r['noop_queries']:>7} {r['full_ms']:>9.1f}ms {r['full_created']:>7} "
                f"{r['full_queries']:>7} {r['full_db_ms']:>6.1f}ms",
                flush=True,
            )
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
