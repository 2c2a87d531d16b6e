"""The chaos suite's long form: 3 replicas on one PostgreSQL, faulted for 10+ minutes while claims run; prints
the table of tests/support/chaos.py and, with --write, puts it in docs/reliability.md with the machine and command.

    sudo python bench/chaos.py                       # the long form (needs root for ip netns and kill -9 of PG)
    sudo python bench/chaos.py --write docs/reliability.md
    sudo python bench/chaos.py --form short          # the short form of the test suite, as a script

Exits 1 when any scenario shows a violation. The harness is test support code; this script imports it from the
repository root (the tests never import bench/).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import shlex
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the harness lives in tests/support, shared with the short form

from tests.support.chaos import ChaosParams, ChaosReport, long_params, netns_available, short_params  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{memory}, Linux {platform.release()}, Python {platform.python_version()}"


def commit() -> str:
    result = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "src"], capture_output=True, text=True
    )
    return result.stdout.strip() + (" (src/ modified)" if dirty.stdout.strip() else "")


def document(report: ChaosReport, command: str, ran_on: str) -> str:
    p = report.params
    when = datetime.datetime.fromtimestamp(report.started_at, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    interval = "default (60 s)" if p.reconcile_interval is None else f"{p.reconcile_interval:g} s"
    stale = "default (300 s)" if p.stale_job_timeout is None else f"{p.stale_job_timeout:g} s"
    verdict = "no violation" if not report.violations else f"{len(report.violations)} violations"
    return f"""# Reliability: the chaos suite

prebuildd's own faults, measured. `bench/chaos.py` starts one PostgreSQL and {p.replicas} `prebuildd server`
replicas on it as processes ({p.daemons_per_replica} embedded daemons each), plus two standalone daemons (one on
loopback, one in its own network namespace), pushes an echo template with pools of 5, 3 and 8, and runs the
scenarios below one after the other while claims are made through the API ({p.claim_batch} every
{p.claim_every:g} s, paused only while a recovery is timed). A poller reads PostgreSQL directly every 0.5 s.

What each column counts:
- **over-target samples**: samples where a pool's valid running plus starting prebuilds exceeded its target
  (the invariant of SPEC §5.1), over all samples taken during the scenario;
- **double claims**: a prebuild handed to two requests (two `claim.succeeded` events, or two 201 answers);
- **lost workspaces**: a claim answered 201 whose workspace is missing, deleted or not the user's;
- **lost completions**: a job still running {p.lost_completion_bound:g} s after its daemon was last disturbed
  (a daemon alive, not frozen, not cut off), or failed by the server although its daemon never was;
- **stuck jobs**: a pending job {p.pending_bound:g} s after the last fault ended, or a job held by a killed
  daemon that is not failed within the stale timeout plus a reaper pass plus 30 s;
- **daemons lost**: after the scenario, a burst of short builds per tag; a daemon that runs none is lost;
- **back at target**: from the fault's end (a replica answering again, PostgreSQL accepting connections, the
  frozen holder resumed) until every pool is at target. Bounds: {p.replica_bound:g} s after a replica restart,
  {p.pg_bound:g} s after PostgreSQL returns, at most {p.freeze_bound:g} s of reconciliation lost to a frozen lock
  holder (from a claim made during the freeze to the next prebuild created).

A scenario's faults are followed by a daemon probe; if daemons were lost or the pools stay below target, the
harness heals the cluster before the next scenario (restarts the replicas concerned, clears the pools' backoff)
and says so in the notes: a manual step the system should not have needed, and already counted as a violation.
The short form (tests/chaos/test_chaos_short.py, part of the test suite) runs the same scenarios once with a
shorter stale-job timeout, outage, partition and heartbeat; see `short_params` in tests/support/chaos/params.py.

## Last run: {verdict}

- when: {when}; commit: {ran_on}
- machine: {machine()}
- command: `{command}`
- form: {p.form}; reconcile interval {interval}, stale-job timeout {stale}, heartbeat {p.heartbeat_interval:g} s;
  echo delays: start {p.start_delay}, stop/delete {p.delete_delay}, import {p.import_delay}, standalone jobs
  {p.standalone_delay}

{report.text()}
"""


async def _run(params: ChaosParams, workdir: Path | None) -> ChaosReport:
    """The run, cancelled (so that it tears down what it started) on SIGTERM or SIGINT."""
    from tests.support.chaos import run_chaos

    task = asyncio.create_task(run_chaos(params, workdir, log=lambda line: print(line, flush=True)))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)  # where a run waits, for whoever debugs it
    return await task


def _dump_tasks() -> None:
    for task in asyncio.all_tasks():
        task.print_stack(limit=6, file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--form", choices=("long", "short"), default="long")
    parser.add_argument("--kills", type=int, help="replica kills (long form: at least 30)")
    parser.add_argument("--claims", type=int, help="claims to make at least (long form: 300)")
    parser.add_argument("--minutes", type=float, help="how long the run lasts at least (long form: 10)")
    parser.add_argument("--workdir", type=Path, help="where logs and data go (default: a new temp dir)")
    parser.add_argument(
        "--write", type=Path, help="write the table and the run's context to this Markdown file"
    )
    args = parser.parse_args()
    reason = netns_available()
    if reason is not None:
        print(f"chaos: cannot run: {reason}", file=sys.stderr)
        return 2
    params = long_params() if args.form == "long" else short_params()
    if args.kills is not None:
        params.replica_kills = args.kills
    if args.claims is not None:
        params.min_claims = args.claims
    if args.minutes is not None:
        params.min_duration = args.minutes * 60
    ran_on = commit()  # before the run: the tree may move on while it lasts
    report = asyncio.run(_run(params, args.workdir))
    report.prune()
    print()
    print(report.text())
    if args.write is not None:
        command = "python bench/chaos.py " + shlex.join(sys.argv[1:])
        args.write.write_text(document(report, command, ran_on))
        print(f"\nwrote {args.write}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
