"""The per-preset gauges are by name (organization, template, preset): while a new version takes over, the old
version's preset of the same name is still planned, and the gauges must still read what a claim can take."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from uuid import UUID

import pytest

from prebuildd.domain.autoscale import Demand
from prebuildd.domain.planner import plan_preset
from prebuildd.domain.targets import PoolTarget
from prebuildd.runtime.metrics import Metrics
from tests.support.factories import NOW, pool_snapshot, preset_row, running

OLD, NEW = UUID(int=10), UUID(int=11)
LABELS = {"organization": "default", "template": "tpl", "preset": "small"}


def _presets() -> dict[UUID, object]:
    row = preset_row(organization_name="default")
    return {
        OLD: replace(row, preset_id=OLD, version_name="v1", active=False, desired_instances=3),
        NEW: replace(row, preset_id=NEW, version_name="v2", active=True, desired_instances=2),
    }


def _plans() -> dict[UUID, object]:
    # v1: 3 ready prebuilds being removed (not claimable); v2: 2 ready, 1 starting.
    old = plan_preset(
        pool_snapshot(
            preset_id=OLD, active=False, desired_instances=3, running=(running(1), running(2), running(3))
        ),
        NOW,
    )
    new = plan_preset(
        pool_snapshot(preset_id=NEW, desired_instances=3, running=(running(4), running(5)), starting=1), NOW
    )
    return {OLD: old, NEW: new}


def _gauge(m: Metrics, name: str) -> float | None:
    return m.registry.get_sample_value(name, LABELS)


@pytest.mark.parametrize("order", [(OLD, NEW), (NEW, OLD)], ids=["old version first", "new version first"])
def test_the_pool_gauges_add_up_the_versions_of_a_name(order: tuple[UUID, UUID]) -> None:
    presets, plans = _presets(), _plans()
    m = Metrics()
    m.observe_cycle(
        presets,  # type: ignore[arg-type]
        [plans[pid] for pid in order],  # type: ignore[misc]
        paused=False,
        duration=0.1,
        ended_at=NOW,
        failed_ids=[],
    )
    # Only v2's ready prebuilds can be claimed: the gauge equals that, whichever plan came last.
    assert _gauge(m, "prebuildd_prebuilds_eligible") == 2
    assert _gauge(m, "prebuildd_prebuilds_desired") == 3  # v1 wants none
    assert _gauge(m, "prebuildd_prebuilds_running") == 5
    assert _gauge(m, "prebuildd_prebuilds_starting") == 1


def test_the_sizing_gauges_follow_the_active_version() -> None:
    presets = _presets()
    demand = Demand(
        claims=(5, 10, 30, 60, 120),
        day=200,
        claims_hour=60,
        first_at=NOW - timedelta(hours=3),
        ready_p90_seconds=480.0,
        ready_mean_seconds=276.0,
        ready_samples=20,
    )
    old = PoolTarget(pool_snapshot(preset_id=OLD, active=False))  # the static source, no demand
    new = PoolTarget(pool_snapshot(preset_id=NEW, target_source="autoscale"), None, 5)
    presets[NEW] = replace(presets[NEW], autoscale={"min": 1, "max": 20, "target_hit_rate": 0.95})  # type: ignore[type-var]
    for order in ((OLD, NEW), (NEW, OLD)):
        m = Metrics()
        targets = {OLD: old, NEW: new}
        m.observe_sizing(presets, {pid: targets[pid] for pid in order}, {NEW: demand}, NOW)  # type: ignore[arg-type]
        sources = {
            s: m.registry.get_sample_value("prebuildd_preset_target_source", {**LABELS, "source": s})
            for s in ("scheduled", "autoscale")
        }
        assert sources == {"scheduled": None, "autoscale": 1.0}, order
        assert _gauge(m, "prebuildd_autoscale_lead_time_seconds") == 276.0
