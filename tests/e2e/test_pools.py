"""Pools end to end: a real server converges, refills after a delete through the kick, and explains itself."""

from __future__ import annotations

from pathlib import Path

from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.templates.archive import pack_directory
from tests.support.server import RunningServer, start_server
from tests.support.templates import write_template
from tests.support.waiting import wait_for

POOL_TEMPLATE = """
provisioner = "exec"
[exec]
create = "create.sh"
delete = "delete.sh"
[[presets]]
name = "warm"
[presets.prebuilds]
instances = 3
"""
FILES = {"create.sh": "#!/bin/sh\necho preparing\n", "delete.sh": "#!/bin/sh\necho removing\n"}


async def _push(running: RunningServer, tmp: Path, name: str, manifest: str, files: dict[str, str]) -> None:
    archive = pack_directory(write_template(tmp / name, manifest, files))
    async with running.client() as client:
        response = await client.post(
            f"/api/v1/templates/{name}/versions",
            params={"activate": True},
            content=archive,
            headers={"Content-Type": "application/gzip"},
        )
        assert response.status_code == 201, response.text


async def _status(running: RunningServer) -> dict[str, dict[str, object]]:
    async with running.client() as client:
        response = await client.get("/api/v1/prebuilds/status")
        assert response.status_code == 200, response.text
        return {p["preset"]: p for p in response.json()["presets"]}


async def test_a_pool_converges_and_refills_through_the_kick(database_url: str, tmp_path: Path) -> None:
    running = await start_server(database_url, tmp_path / "server", reconcile_interval=3600.0)
    try:
        await _push(running, tmp_path, "pool", POOL_TEMPLATE, FILES)

        async def three_eligible() -> bool:
            warm = (await _status(running)).get("warm")
            return bool(warm and warm["eligible"] == 3 and warm["starting"] == 0)

        await wait_for(three_eligible, timeout=60, what="3 ready prebuilds")
        warm = (await _status(running))["warm"]
        assert warm["status"] == "healthy" and warm["desired"] == 3 and warm["running"] == 3

        async with running.client() as client:
            listed = await client.get("/api/v1/workspaces", params={"owner": "all"})
            assert listed.status_code == 200, listed.text
            prebuilds = [w for w in listed.json() if w["owner_id"] == str(PREBUILDS_USER_ID)]
            assert len(prebuilds) == 3
            victim = prebuilds[0]["id"]
            deleted = await client.post(f"/api/v1/workspaces/{victim}/builds", json={"transition": "delete"})
            assert deleted.status_code == 201, deleted.text

        # The interval is an hour: only the kick from the delete's completion can bring the pool back.
        async def refilled() -> bool:
            async with running.client() as client:
                listed = await client.get("/api/v1/workspaces", params={"owner": "all"})
            ids = {w["id"] for w in listed.json() if w["owner_id"] == str(PREBUILDS_USER_ID)}
            warm = (await _status(running))["warm"]
            return victim not in ids and warm["eligible"] == 3

        await wait_for(refilled, timeout=60, what="the pool to refill after the delete")
        warm = (await _status(running))["warm"]
        assert warm["last_decision"] is not None and warm["next_action"].startswith("at target")

        # Labelled with the organization's name, never its id. The status reads a fresh snapshot; the gauge is
        # the last cycle's, and the cycle that the refill's completion kicks may still be running.
        line = 'prebuildd_prebuilds_eligible{organization="default",preset="warm",template="pool"} 3.0'

        async def gauge_caught_up() -> bool:
            async with running.client() as client:
                return line in (await client.get("/metrics")).text

        await wait_for(gauge_caught_up, timeout=30, what=f"/metrics to show {line}")
    finally:
        await running.server.stop()


async def test_pause_and_resume_through_the_api(running_server: RunningServer, tmp_path: Path) -> None:
    async with running_server.client() as client:
        paused = await client.put("/api/v1/prebuilds/settings", json={"reconciliation_paused": True})
        assert paused.status_code == 200 and paused.json() == {"reconciliation_paused": True}
    await _push(running_server, tmp_path, "pool", POOL_TEMPLATE, FILES)

    async def imported_and_paused() -> bool:
        warm = (await _status(running_server)).get("warm")
        return bool(warm and warm["status"] == "paused")

    await wait_for(imported_and_paused, what="the preset to show as paused")
    assert (await _status(running_server))["warm"]["starting"] == 0
    async with running_server.client() as client:
        resumed = await client.put("/api/v1/prebuilds/settings", json={"reconciliation_paused": False})
        assert resumed.json() == {"reconciliation_paused": False}

    async def three() -> bool:
        return (await _status(running_server))["warm"]["eligible"] == 3

    await wait_for(three, timeout=60, what="the pool after resume")


async def test_pool_settings_change_without_a_new_version(
    running_server: RunningServer, tmp_path: Path
) -> None:
    await _push(running_server, tmp_path, "pool", POOL_TEMPLATE, FILES)

    async def at(n: int) -> bool:
        warm = (await _status(running_server)).get("warm")
        return bool(warm and warm["eligible"] == n and warm["running"] == n)

    await wait_for(lambda: at(3), timeout=60, what="3 prebuilds")
    async with running_server.client() as client:
        bad = await client.patch(
            "/api/v1/templates/pool/presets/warm", json={"schedules": [{"cron": "0 8 * * *", "instances": 1}]}
        )
        assert bad.status_code == 400 and "minute field" in bad.json()["message"]
        bad_tz = await client.patch("/api/v1/templates/pool/presets/warm", json={"timezone": "Mars/Olympus"})
        assert bad_tz.status_code == 400 and "timezone" in bad_tz.json()["message"]
        changed = await client.patch(
            "/api/v1/templates/pool/presets/warm", json={"instances": 1, "ttl": "8h"}
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["desired_instances"] == 1 and changed.json()["ttl_seconds"] == 8 * 3600
        assert changed.json()["warnings"] == []
        overlapping = await client.patch(
            "/api/v1/templates/pool/presets/warm",
            json={
                "schedules": [
                    {"cron": "* 8-18 * * 1-5", "instances": 2},
                    {"cron": "* 12 * * *", "instances": 3},
                ]
            },
        )
        # Accepted, and said: the pool keeps its instances while the schedules overlap (whatever the hour now).
        assert overlapping.status_code == 200, overlapping.text
        assert overlapping.json()["warnings"] == [
            "schedules '* 8-18 * * 1-5' and '* 12 * * *' overlap (both cover Mon 12:00): using instances"
        ]
        cleared = await client.patch("/api/v1/templates/pool/presets/warm", json={"schedules": []})
        assert cleared.status_code == 200 and cleared.json()["warnings"] == []
    await wait_for(lambda: at(1), timeout=60, what="the pool to shrink to 1")
