"""The harness: starts PostgreSQL, the replicas and the standalone daemons, pushes the templates, makes claims,
probes which daemons take work, and heals the cluster between scenarios."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg

from prebuildd.server.embedded_pg import EmbeddedPostgres
from prebuildd.templates.archive import pack_directory
from tests.support.chaos.params import (
    DATABASE,
    HOST_ADDRESS,
    LO_TEMPLATE,
    MARKER,
    NETNS,
    NS_TEMPLATE,
    POOL_TAG,
    POOL_TEMPLATE,
    POOLS,
    PROBE_TEMPLATE,
    ChaosParams,
)
from tests.support.chaos.poller import STATE_LOST_SQL, Poller
from tests.support.chaos.processes import (
    PidBook,
    Proc,
    free_port,
    marked_pids,
    netns_available,
    remove_leftovers,
    setup_netns,
    teardown_netns,
    until,
)
from tests.support.chaos.report import ClaimRecord, Recovery, ScenarioStats

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
        self.metric_counts: dict[str, list[tuple[int, int]]] = {}
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
            conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def _replica(self, index: int) -> Replica:
        assert self.pg is not None
        p = self.params
        port = free_port(self.http_host)
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
        record = ClaimRecord(username, user_id, 0, None, False, time.time(), name=name)
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
        await self.check_outcomes()
        await self._check_claims()
        await self._check_unanswered()

    async def _check_unanswered(self) -> None:
        """A claim that got no answer (its replica died mid-request) may still have taken effect: say how many."""
        pending = [
            c for c in self.claims if c.status == 0 and c.took_effect is None and c.at < time.time() - 5
        ]
        if not pending:
            return
        rows = await self._query_with_retry(
            "SELECT owner_id::text AS owner_id, name FROM workspaces WHERE NOT deleted AND name = ANY(%(names)s)",
            {"names": [c.name for c in pending]},
        )
        found = {(r["owner_id"], r["name"]) for r in rows}
        for c in pending:
            c.took_effect = (c.user_id, c.name) in found

    async def _check_claims(self) -> None:
        """Every claim answered 201 names a live workspace of its user, and no prebuild went to two requests."""
        stats = self.current
        handed: dict[str, list[ClaimRecord]] = {}
        done = [c for c in self.claims if c.status == 201 and c.workspace_id and not c.checked]
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
            c.checked = True
        for wid, records in handed.items():
            if len(records) > 1 and wid not in self.poller.double_claim_ids:
                self.poller.double_claim_ids.add(wid)
                stats.double_claims += 1
                self.detail(f"prebuild {wid} handed to {len(records)} requests: {[r.user for r in records]}")

    async def check_outcomes(self) -> None:
        """Every succeeded start build holds the state its echo run produced (``echo-state:<build number>``): a
        completion recorded without its state has lost part of the outcome."""
        rows = await self._query_with_retry(STATE_LOST_SQL, {"since": self.started_dt})
        for row in rows:
            job = str(row["job_id"])
            if job not in self.poller.lost_jobs:
                self.poller.lost_jobs.add(job)
                self.current.lost_completions += 1
                self.detail(f"job {job} succeeded but its build holds state {row['state']!r}, not the echo's")

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
        # Daemons race for each job (SKIP LOCKED), so one burst can leave a healthy daemon without a job: bursts
        # repeat until every daemon has run one or the deadline passes. Each later burst is sized to what is
        # still missing, so a lost daemon costs at most the deadline, not a flood of probe workspaces.
        embedded_left, zones_left = embedded_expected, zones
        while True:
            jobs = await self._probe_jobs(2 * embedded_left, zones_left)
            await until(functools.partial(self._jobs_done, jobs), max(deadline - time.monotonic(), 1.0), 0.3)
            for row in await self._query_with_retry(
                "SELECT worker_id FROM provisioner_jobs WHERE id = ANY(%(ids)s) AND worker_id IS NOT NULL",
                {"ids": jobs},
            ):
                seen.add(row["worker_id"])
            missing = self._missing(per_pid, seen)
            if missing == {} or time.monotonic() > deadline:
                break
            embedded_left = sum(n for pid, n in missing.items() if self.pids.owner[pid].startswith("replica"))
            # A standalone daemon serves one zone alone, so its zone is probed again only while it is missing.
            zones_left = [z for z, proc in self.standalone.items() if proc.alive() and proc.pid in missing]
            if embedded_left:
                embedded_left = max(embedded_left, embedded_expected // 2)
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

    async def daemons_alive_by_metrics(self) -> tuple[int, int] | None:
        """Embedded daemons alive and configured over all live replicas, from their ``prebuildd_daemons_alive`` and
        ``prebuildd_daemons_configured`` gauges; None when no replica exports them. Cheap enough for every fault."""
        alive = configured = 0
        found = False
        for r in self.live_replicas():
            try:
                text = (await self.client.get(self.url(r) + "/metrics", timeout=3)).text
            except httpx.HTTPError:
                continue
            for name, value in re.findall(
                r"^prebuildd_daemons_(alive|configured) ([0-9.e+]+)$", text, re.MULTILINE
            ):
                found = True
                if name == "alive":
                    alive += int(float(value))
                else:
                    configured += int(float(value))
        return (alive, configured) if found else None

    async def note_daemons_after_fault(self) -> None:
        """After each fault: what the replicas say of their daemons (the probe at the scenario's end decides)."""
        counts = await self.daemons_alive_by_metrics()
        if counts is None:
            return
        self.metric_counts.setdefault(self.current.name, []).append(counts)
        if counts[0] < counts[1]:
            self.detail(f"after a fault, /metrics: {counts[0]} of {counts[1]} embedded daemons alive")

    def metric_note(self, stats: ScenarioStats) -> None:
        counts = self.metric_counts.get(stats.name)
        if counts:
            worst = min(counts, key=lambda c: c[0] - c[1])
            stats.notes.append(
                f"daemons alive per /metrics after each of {len(counts)} faults: lowest {worst[0]}/{worst[1]}"
            )

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
        for pid in marked_pids():
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
