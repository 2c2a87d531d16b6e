"""The poller: reads PostgreSQL on its own connection every half second and counts samples over target, double
claims, lost completions and stuck jobs, as the invariants are defined."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from prebuildd.domain.identity import PREBUILDS_USER_ID
from tests.support.chaos.params import POOL_TEMPLATE, POOLS
from tests.support.chaos.processes import epoch

if TYPE_CHECKING:
    from tests.support.chaos.harness import Harness


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

STATE_LOST_SQL = """
SELECT j.id AS job_id, b.state
FROM workspace_builds b JOIN provisioner_jobs j ON j.id = b.job_id
WHERE j.job_status = 'succeeded' AND b.transition = 'start' AND b.created_at > %(since)s
  AND b.state IS DISTINCT FROM convert_to('echo-state:' || b.build_number, 'UTF8')
"""
"""Succeeded start builds without the state the echo provisioner leaves (provisioner/echo.py echo_state)."""

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
            cur = await asyncio.wait_for(conn.execute(sql, params or {}), timeout=5)
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
                since = max(epoch(row["created_at"]) or now, fault_end)
                if h.fault_active is None and now - since > p.pending_bound:
                    self.stuck_jobs.add(jid)
                    h.current.stuck_jobs += 1
                    h.detail(f"job {jid} pending for {now - since:.0f} s since the last fault ended")
                continue
            pid = h.pids.worker_pid(row["worker_id"])
            started = epoch(row["started_at"]) or now
            if pid is None or pid not in h.pids.owner:
                age = now - (epoch(row["updated_at"]) or now)
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
            started, completed = epoch(row["started_at"]) or 0.0, epoch(row["completed_at"]) or now
            if not h.pids.disturbed_between(pid, started, completed):
                self.lost_jobs.add(jid)
                h.current.lost_completions += 1
                h.detail(
                    f"job {jid} of live, undisturbed daemon {row['worker_id']} ({h.pids.owner[pid]}) failed by "
                    f"the server ({row['failure_class']}): {row['error']}"
                )
