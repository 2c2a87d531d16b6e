"""The fault scenarios, one after the other, and the run that strings them together."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import re
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from tests.support.chaos.harness import Harness, Replica
from tests.support.chaos.params import CYCLE_LOCK_KEY, LO_TEMPLATE, NS_TEMPLATE, POOLS, VETH_HOST, ChaosParams
from tests.support.chaos.poller import ADVISORY_HOLDER_SQL, LEASE_TABLES_SQL, NEW_PREBUILDS_SQL
from tests.support.chaos.processes import ip, run_lock, until
from tests.support.chaos.report import ChaosReport, Recovery, ScenarioStats

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
        await h.note_daemons_after_fault()
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
        await h.note_daemons_after_fault()
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
    await h.note_daemons_after_fault()
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
    for _ in range(3):  # a claim that found no prebuild (a cold build) leaves no gap to refill: claim again
        record = await h.claim(random.choice(list(POOLS)))
        if record.status == 201 and record.claimed:
            break
    else:
        stats.notes.append(f"no claim after the freeze took a prebuild: {record.status} {record.error}")

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
    await h.note_daemons_after_fault()
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
        cur = await conn.execute(query)
        for row in await cur.fetchall():
            if str(row["holder"]).startswith("pbchaos-replica-"):
                return str(row["holder"])
    name_column = next((c for c in columns if any(w in c for w in ("holder", "owner", "replica"))), None)
    if name_column is None:
        return None
    cur = await conn.execute(f'SELECT "{name_column}"::text AS holder FROM "{table}" {where}')
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
    ip("link", "set", VETH_HOST, "down")
    stats.faults += 1
    try:
        await asyncio.sleep(p.partition)  # the fault schedule: the partition itself
    finally:
        ip("link", "set", VETH_HOST, "up")
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
            # The replica kills fill the run up to its minimum length, less the 2.5 minutes the rest takes at least.
            deadline_at = started + params.min_duration - 150
            for run in (
                functools.partial(scenario_replica_kills, h, deadline_at),
                functools.partial(scenario_standalone_kill, h),
                functools.partial(scenario_partition, h),
                functools.partial(scenario_freeze, h),
                functools.partial(scenario_pg_restart, h),
                functools.partial(scenario_pg_kill, h),
            ):
                await run()
                h.metric_note(h.current)
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
