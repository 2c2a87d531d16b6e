"""The autoscaler end to end over HTTP on the injected clock: a real server (reconciler, daemons, exec builds)
whose clock only the test moves. Claims through the API grow the pool to the base-stock size of the measured
demand; after the load stops it holds for the stabilization window, then shrinks by bounded steps back to
``min``. /metrics reports the target source, λ, L, the recommended size and the hour's hit rate.

A prebuild's build lasts exactly one tick (60 s) of the test's clock: its script waits until the tick file the test
writes has moved on, so every time to ready is 60 s and nothing waits on wall-clock time."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from prebuildd.domain.autoscale import base_stock_size
from prebuildd.prebuilds.loop import Reconciler
from prebuildd.runtime.clock import FakeClock
from tests.support.api import API, push, wait_imported
from tests.support.server import start_server
from tests.support.waiting import wait_for

TICK = 60.0

MANIFEST = """
provisioner = "exec"
[exec]
create = "create.sh"
delete = "delete.sh"
[[presets]]
name = "warm"
[presets.prebuilds]
instances = 1
autoscale = { min = 1, max = 10, target_hit_rate = 0.95 }
"""

# Prebuilds build for one tick; claimed workspaces and cold builds (misses) at once.
CREATE = """#!/bin/sh
[ "$PREBUILDD_IS_PREBUILD" = "true" ] || exit 0
start=$(cat "{gate}/tick")
marker="{gate}/running/$start-$PREBUILDD_WORKSPACE_ID"
touch "$marker"
while [ "$(cat "{gate}/tick")" = "$start" ]; do sleep 0.01; done
rm -f "$marker"
"""


@dataclass
class Pool:
    """The test's side of the simulated time: the fake clock, the tick file the builds watch, the claims made."""

    clock: FakeClock
    gate: Path
    reconciler: Reconciler
    client: httpx.AsyncClient
    tick: int = 0
    claims: list[tuple[datetime, bool]] = field(default_factory=list)
    """(when, found a ready prebuild) of every claim."""

    def write_tick(self) -> None:
        tmp = self.gate / "tick.tmp"
        tmp.write_text(str(self.tick))
        os.replace(tmp, self.gate / "tick")  # atomic: a build never reads half a number

    def building(self) -> list[int]:
        """The tick at which each prebuild build still running started."""
        return [int(p.name.split("-", 1)[0]) for p in (self.gate / "running").iterdir()]

    async def status(self) -> dict[str, Any]:
        response = await self.client.get(f"{API}/prebuilds/status")
        assert response.status_code == 200, response.text
        [warm] = [p for p in response.json()["presets"] if p["preset"] == "warm"]
        return dict(warm)

    async def settle(self, after_cycle: int) -> dict[str, Any]:
        """Wait for a cycle after ``after_cycle`` and a converged pool: eligible + starting = desired, nothing
        being deleted, every starting prebuild's build running and started at this tick."""
        found: dict[str, Any] = {}

        async def converged() -> bool:
            if self.reconciler.cycles <= after_cycle:
                return False
            found.update(await self.status())
            builds = self.building()
            return (
                found["eligible"] + found["starting"] == found["desired"]
                and found["deleting"] == 0
                and len(builds) == found["starting"]
                and all(b == self.tick for b in builds)
            )

        await wait_for(converged, timeout=60, what=f"the pool to converge at tick {self.tick}")
        return found

    async def claim(self, count: int) -> dict[str, Any]:
        cycles = self.reconciler.cycles
        for _ in range(count):
            n = len(self.claims)
            response = await self.client.post(
                f"{API}/workspaces", json={"name": f"w{n}", "template": "pool", "preset": "warm"}
            )
            assert response.status_code == 201, response.text
            self.claims.append((self.clock.now(), bool(response.json()["claimed"])))
        return await self.settle(cycles)  # each claim kicks the reconciler

    async def minute(self) -> dict[str, Any]:
        """Move the clock one tick: builds started at the last tick finish, then a cycle runs."""
        self.clock.advance(TICK)
        self.tick += 1
        self.write_tick()
        await wait_for(
            lambda: all(b == self.tick for b in self.building()), timeout=60, what="the last tick's builds"
        )
        cycles = self.reconciler.cycles
        self.reconciler.kick("test: a minute passed")
        return await self.settle(cycles)

    def hit_rate_hour(self) -> float:
        since = self.clock.now() - timedelta(hours=1)
        recent = [hit for at, hit in self.claims if at > since]
        return sum(recent) / len(recent)


def _samples(text: str, preset: str) -> dict[str, float]:
    """The preset's sizing series: metric name (with the source label for the target source) -> value."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("preset") != preset:
                continue
            key = s.name + (f"{{{s.labels['source']}}}" if "source" in s.labels else "")
            out[key] = s.value
    return out


async def test_a_claim_load_over_http_grows_the_pool_and_it_shrinks_after_the_window(
    database_url: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    gate = tmp_path / "gate"
    (gate / "running").mkdir(parents=True)
    running = await start_server(
        database_url,
        tmp_path / "server",
        server_options={"clock": clock},
        provisioner_daemons=12,  # every build of the pool (max 10) runs at once: builds wait for the tick
        reconcile_interval=3600.0,  # cycles come from kicks only: the claims', the builds', the test's
        stale_job_timeout=3600.0,  # a tick moves the clock 60 s past a build's last heartbeat: not stale
    )
    reconciler = running.server.reconciler
    assert reconciler is not None
    try:
        async with running.client() as client:
            pool = Pool(clock, gate, reconciler, client)
            pool.write_tick()
            files = {"create.sh": CREATE.format(gate=gate), "delete.sh": "#!/bin/sh\n"}
            pushed = await push(client, tmp_path, "pool", MANIFEST, files, activate=True)
            assert pushed.status_code == 201, pushed.text
            assert (await wait_imported(client, "pool", "v1"))["import_status"] == "succeeded"
            await pool.settle(reconciler.cycles - 1)
            await pool.minute()
            first = await pool.status()
            assert (first["desired"], first["eligible"], first["target_source"]) == (
                1,
                1,
                "autoscale_fallback",
            )

            # Load: 2 claims a minute. Under 30 minutes of history the pool keeps instances = 1 (a miss a
            # minute); then it is sized from the demand: λ = 2/min and L = 60 s.
            desired: list[tuple[datetime, int, str]] = []
            for _ in range(35):
                await pool.claim(2)
                status = await pool.minute()
                desired.append((clock.now(), status["desired"], status["sizing"]))
            assert desired[0][1] == 1 and "too little data" in desired[0][2]
            grown = await pool.claim(2)  # what the status and /metrics say just after a cycle
            assert grown["target_source"] == "autoscale", grown
            assert grown["desired"] == base_stock_size(2.0, TICK, 0.95) == 6, grown
            assert (
                grown["sizing"] == "desired 6 (autoscale: 2 claims/min, ready mean 1m, p90 1m, target 95%)"
            ), grown
            assert grown["recommendation"] == "pool 6, recommended 6 for 95% hits", grown
            metrics = _samples((await client.get("/metrics")).text, "warm")
            assert metrics["prebuildd_preset_target_source{autoscale}"] == 1
            assert metrics.get("prebuildd_preset_target_source{autoscale_fallback}", 0) == 0
            assert metrics["prebuildd_autoscale_arrival_rate"] == 2.0
            assert metrics["prebuildd_autoscale_lead_time_seconds"] == TICK
            assert metrics["prebuildd_autoscale_recommended"] == 6
            assert 0 < pool.hit_rate_hour() < 1
            assert math.isclose(metrics["prebuildd_prebuilds_hit_rate_1h"], pool.hit_rate_hour())
            status = await pool.minute()
            assert status["eligible"] == 6  # the prebuilds exist, not only the target
            desired.append((clock.now(), status["desired"], status["sizing"]))
            # Once sized, the claims find ready prebuilds.
            assert all(hit for at, hit in pool.claims if at >= desired[-4][0])

            # A burst raises the pool once more; then no claims at all.
            raised = await pool.claim(12)  # 32 claims+misses in 10 minutes: 3.2/min
            assert raised["desired"] == base_stock_size(3.2, TICK, 0.95) == 7, raised
            raised_at = clock.now()
            raised = await pool.minute()
            desired.append((clock.now(), raised["desired"], raised["sizing"]))
            while len(desired) < 37 + 60 and not (desired[-1][1] == 1 and raised["eligible"] == 1):
                raised = await pool.minute()
                desired.append((clock.now(), raised["desired"], raised["sizing"]))

        # It held through the stabilization window although the estimate had fallen, then stepped down.
        after_burst = [d for d in desired if d[0] > raised_at]
        assert after_burst[0][1] == 7
        assert any("(stabilization)" in sizing for _, _, sizing in after_burst), after_burst
        for (at, target, _), (_, before, _) in zip(after_burst[1:], after_burst, strict=False):
            if target < before:
                assert at >= raised_at + timedelta(minutes=10), (at, raised_at)
                assert before - target <= math.ceil(before / 4), (before, target)
            assert target <= before  # no claims: never up again
        assert desired[-1][1] == 1 and raised["eligible"] == 1, desired[-5:]
        assert raised["target_source"] == "autoscale"
    finally:
        await running.server.stop()
