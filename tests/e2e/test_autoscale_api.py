"""Autoscale and target expressions over the API: `presets set` turns them on, range-checks every number and
refuses a bad expression with a 400 naming the key, and status reports the target source and the sizing."""

from __future__ import annotations

from pathlib import Path

from prebuildd.server.process import OWNER_TOKEN_FILE
from tests.support.api import API, push, wait_imported
from tests.support.cli import Cli
from tests.support.server import RunningServer
from tests.support.templates import EXEC_FILES, EXEC_MANIFEST


async def test_presets_set_autoscale_and_expression(running_server: RunningServer, tmp_path: Path) -> None:
    async with running_server.client() as client:
        assert (await push(client, tmp_path, "web", EXEC_MANIFEST, EXEC_FILES)).status_code == 201
        assert (await wait_imported(client, "web", "v1"))["import_status"] == "succeeded"
        url = f"{API}/templates/web/presets/web"
        for body, key in (
            ({"autoscale": {"min": -1}}, "autoscale.min"),
            ({"autoscale": {"max": 10**6}}, "autoscale.max"),
            ({"autoscale": {"target_hit_rate": 1.5}}, "autoscale.target_hit_rate"),
            ({"autoscale": {"min": 9, "max": 3}}, "autoscale.max"),
            ({"autoscale": {"stabilization": "soon"}}, "autoscale.stabilization"),
            ({"autoscale": {"lead_time": "p50"}}, "autoscale.lead_time"),
            ({"expression": "running.real"}, "expression"),
            ({"expression": "__import__('os')"}, "expression"),
        ):
            refused = await client.patch(url, json=body)
            assert refused.status_code == 400, (body, refused.text)
            text = refused.text
            assert key in text, (body, text)

        on = await client.patch(url, json={"instances": 0, "autoscale": {"min": 0, "max": 12}})
        assert on.status_code == 200, on.text
        assert on.json()["autoscale"] == {
            "min": 0,
            "max": 12,
            "target_hit_rate": 0.95,
            "stabilization_seconds": 600,
            "lead_time": "mean",
        }
        both = await client.patch(url, json={"expression": "max(scheduled_target, 2)"})
        assert both.status_code == 400 and "not both" in both.json()["message"]

        status = (await client.get(f"{API}/prebuilds/status")).json()
        [preset] = [p for p in status["presets"] if p["preset"] == "web"]
        assert preset["target_source"] == "autoscale_fallback"  # no demand yet: instances
        assert "too little data" in preset["sizing"] and preset["recommended"] is None

        swapped = await client.patch(url, json={"autoscale": None, "expression": "min(scheduled_target, 3)"})
        assert swapped.status_code == 200, swapped.text
        assert (swapped.json()["autoscale"], swapped.json()["expression"]) == (
            None,
            "min(scheduled_target, 3)",
        )
        status = (await client.get(f"{API}/prebuilds/status")).json()
        [preset] = [p for p in status["presets"] if p["preset"] == "web"]
        assert preset["target_source"] == "expression" and preset["desired"] == 0, str(preset)
        assert preset["sizing"] == "desired 0 (expression 'min(scheduled_target, 3)')"
        cleared = await client.patch(url, json={"expression": None})
        assert cleared.json()["expression"] is None


async def test_presets_set_from_the_cli(running_server: RunningServer, tmp_path: Path) -> None:
    async with running_server.client() as client:
        assert (await push(client, tmp_path, "web", EXEC_MANIFEST, EXEC_FILES)).status_code == 201
        assert (await wait_imported(client, "web", "v1"))["import_status"] == "succeeded"
    cli = Cli(tmp_path / "cli")
    token_file = running_server.data_dir / OWNER_TOKEN_FILE
    await cli.ok("login", running_server.url, "--token-file", str(token_file))
    on = await cli.ok(
        "presets", "set", "web", "web", "--instances", "0", "--autoscale-min", "0", "--autoscale-max", "8"
    )
    assert "autoscale 0..8 for 95% hits" in on.err + on.out
    refused = await cli.refused("presets", "set", "web", "web", "--target-hit-rate", "2")
    assert "target_hit_rate" in refused.err
    swapped = await cli.ok(
        "presets", "set", "web", "web", "--no-autoscale", "--expression", "scheduled_target"
    )
    assert "expression 'scheduled_target'" in swapped.err + swapped.out
    status = await cli.ok("prebuilds", "status", "--wide")
    assert "expression" in status.out
    explain = await cli.ok("prebuilds", "explain", "web", "web")
    assert "desired 0 (expression 'scheduled_target')" in explain.out
