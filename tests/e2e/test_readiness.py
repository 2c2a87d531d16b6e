"""/readyz over real HTTP: ready with every check's result, and 503 naming the reconcile loop once it has not
attempted a cycle for three intervals (the injected clock moves, nothing sleeps)."""

from __future__ import annotations

from pathlib import Path

import httpx

from prebuildd.runtime.clock import FakeClock
from tests.support.server import start_server
from tests.support.waiting import wait_for


async def test_readyz_fails_naming_the_reconciler_when_no_cycle_was_attempted_for_three_intervals(
    database_url: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    running = await start_server(
        database_url,
        tmp_path / "server",
        provisioner_daemons=0,
        reconcile_interval=60.0,
        server_options={"clock": clock},
    )
    reconciler = running.server.reconciler
    assert reconciler is not None
    try:
        # The first cycle must have ended: one still running when the clock moves would end "after" the jump.
        await wait_for(lambda: reconciler.last_success_at is not None, what="the first cycle")
        async with httpx.AsyncClient(base_url=running.url) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            checks = ready.json()["checks"]
            assert "daemons" not in checks  # this replica runs none: nothing to check
            assert checks["reconciler"]["last_attempt_at"] == clock.now().isoformat()

            clock.advance(180)  # exactly three intervals: still within the bound
            again = await client.get("/readyz")
            assert again.status_code == 200, again.text
            clock.advance(1)
            stalled = await client.get("/readyz")
            assert stalled.status_code == 503, stalled.text
            body = stalled.json()
            assert body["code"] == "not_ready"
            assert body["message"].startswith("not ready: reconciler: reconcile loop stalled")
            assert body["detail"]["checks"]["reconciler"]["ok"] is False
            assert body["detail"]["checks"]["database"]["ok"] is True

            # A new attempt makes the replica ready again.
            reconciler.kick("test")
            await wait_for(
                lambda: reconciler.last_success_at == clock.now(), what="a cycle completed after the kick"
            )
            back = await client.get("/readyz")
            assert back.status_code == 200, back.text
            metrics = running.server.services.metrics if running.server.services else None
            assert metrics is not None
            assert metrics.registry.get_sample_value("prebuildd_reconcile_seconds_since_success") == 0
    finally:
        await running.server.stop()
