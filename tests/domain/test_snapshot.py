"""From snapshot rows to a PresetSnapshot (SPEC §5 step 3 and "Per-preset state"): how the latest build of each
prebuild is classified, and what grouping and in-flight counting see."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from prebuildd.domain.planner import CleanupReason, Leftover, PendingCreate, RunningPrebuild
from prebuildd.domain.schedules import Schedule
from prebuildd.domain.snapshot import (
    PrebuildRow,
    PresetRow,
    PresetRows,
    group,
    inflight_jobs,
    preset_snapshot,
)
from tests.support.factories import MIN, NOW, PRESET, latest_build, preset_row

RETRY = timedelta(seconds=90)


def snapshot(rows: list[PrebuildRow], **preset_changes: Any) -> Any:
    return preset_snapshot(
        PresetRows(preset_row(**({"desired_instances": 2} | preset_changes)), rows), delete_retry=RETRY
    )


# One row per kind of latest build: where it lands in the snapshot.
CASES = [
    # (id, row kwargs, expected bucket)
    ("start succeeded -> running", dict(transition="start", completed=True), "running"),
    ("start pending (never started) -> starting", dict(transition="start"), "starting"),
    ("start running -> starting", dict(transition="start", started=True), "starting"),
    ("start canceling -> starting", dict(transition="start", started=True, canceled=True), "starting"),
    (
        "start canceled pending -> canceling counts as starting",
        dict(transition="start", canceled=True),
        "starting",
    ),
    (
        "start canceled -> leftover canceled",
        dict(transition="start", canceled=True, completed=True),
        "canceled create",
    ),
    (
        "start canceled after it started -> leftover, infrastructure may exist",
        dict(transition="start", started=True, canceled=True, completed=True),
        "canceled running create",
    ),
    ("start failed -> evidence", dict(transition="start", completed=True, error="boom"), "failed"),
    (
        "start failed before completion -> evidence",
        dict(transition="start", started=True, error="x"),
        "failed",
    ),
    ("stop pending -> stopping", dict(transition="stop"), "stopping"),
    ("stop running -> stopping", dict(transition="stop", started=True), "stopping"),
    ("stop succeeded -> leftover stopped", dict(transition="stop", completed=True), "stopped"),
    ("stop failed -> leftover stopped", dict(transition="stop", completed=True, error="x"), "stopped"),
    ("stop canceled -> leftover stopped", dict(transition="stop", canceled=True, completed=True), "stopped"),
    ("delete pending -> deleting", dict(transition="delete"), "deleting"),
    ("delete running -> deleting", dict(transition="delete", started=True), "deleting"),
    (
        "delete failed -> leftover retried",
        dict(transition="delete", completed=True, error="x"),
        "delete failed",
    ),
    (
        "delete canceled -> leftover retried",
        dict(transition="delete", canceled=True, completed=True),
        "delete failed",
    ),
]


def bucket(snap: Any) -> str:
    found = []
    if snap.running:
        found.append("running")
    if snap.starting:
        found.append("starting")
    if snap.stopping:
        found.append("stopping")
    if snap.deleting:
        found.append("deleting")
    if snap.failed:
        found.append("failed")
    found += [left.reason.value for left in snap.leftovers]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(("kwargs", "expected"), [pytest.param(k, e, id=i) for i, k, e in CASES])
def test_latest_build_classification(kwargs: dict[str, Any], expected: str) -> None:
    assert bucket(snapshot([latest_build(**kwargs)])) == expected
    # The same on an inactive version: classification does not depend on it.
    assert bucket(snapshot([latest_build(**kwargs)], active=False)) == expected


def test_running_keeps_workspace_creation_time_and_readiness_oldest_first() -> None:
    young = latest_build("start", completed=True, ago=5 * MIN, ready=False)
    old = latest_build("start", completed=True, ago=50 * MIN)
    snap = snapshot([young, old])
    assert snap.running == (
        RunningPrebuild(old.workspace_id, old.workspace_created_at, True),
        RunningPrebuild(young.workspace_id, young.workspace_created_at, False),
    )


def test_pending_never_started_creates_are_cancelable_only_on_inactive_presets() -> None:
    pending = latest_build("start")
    started = latest_build("start", started=True)
    canceling = latest_build("start", canceled=True)
    rows = [pending, started, canceling]
    assert snapshot(rows).pending_creates == ()
    inactive = snapshot(rows, active=False)
    assert inactive.pending_creates == (PendingCreate(pending.job_id, pending.workspace_id),)
    assert inactive.starting == 3


def test_pending_stop_or_delete_is_not_a_pending_create() -> None:
    assert snapshot([latest_build("stop"), latest_build("delete")], active=False).pending_creates == ()


def test_canceled_create_is_a_leftover_without_retry_time() -> None:
    r = latest_build("start", canceled=True, completed=True)
    assert snapshot([r]).leftovers == (Leftover(r.workspace_id, CleanupReason.CANCELED),)


def test_canceled_create_that_had_started_is_not_an_orphan() -> None:
    # SPEC §3: only a workspace whose infrastructure never ran is deleted without running infrastructure code
    # (the builder checks the same thing); the plan must know, so that pacing counts the delete job.
    r = latest_build("start", started=True, canceled=True, completed=True)
    assert r.job_status == "canceled" and r.job_started_at is not None
    assert snapshot([r]).leftovers == (Leftover(r.workspace_id, CleanupReason.CANCELED_STARTED),)


def test_failed_delete_is_retried_a_pause_after_its_completion() -> None:
    r = latest_build("delete", completed=True, error="destroy failed")
    assert r.job_completed_at is not None
    leftover = snapshot([r]).leftovers
    assert leftover == (Leftover(r.workspace_id, CleanupReason.DELETE_FAILED, r.job_completed_at + RETRY),)


def test_failed_delete_without_completion_time_waits_from_its_creation() -> None:
    r = latest_build("delete", started=True, error="lost")
    assert r.job_status == "failed" and r.job_completed_at is None
    assert snapshot([r]).leftovers[0].retry_at == r.build_created_at + RETRY


def test_stopped_prebuild_is_deleted_at_once() -> None:
    r = latest_build("stop", completed=True)
    assert snapshot([r]).leftovers == (Leftover(r.workspace_id, CleanupReason.STOPPED),)


def test_a_mixed_pool() -> None:
    rows = [
        latest_build("start", completed=True),
        latest_build("start", completed=True),
        latest_build("start", started=True),
        latest_build("start"),
        latest_build("start", completed=True, error="boom"),
        latest_build("start", completed=True, error="boom"),
        latest_build("stop", started=True),
        latest_build("delete"),
        latest_build("delete"),
        latest_build("stop", completed=True),
    ]
    snap = snapshot(rows)
    assert (len(snap.running), snap.starting, snap.stopping, snap.deleting, snap.failed) == (2, 2, 1, 2, 2)
    assert [left.reason for left in snap.leftovers] == [CleanupReason.STOPPED]


def test_preset_fields_are_carried_over() -> None:
    schedules = (Schedule("* 8-18 * * 1-5", 4),)
    snap = snapshot(
        [],
        ttl_seconds=3600,
        timezone="Europe/Berlin",
        schedules=schedules,
        last_invalidated_at=NOW - MIN,
        desired_instances=5,
        active=False,
    )
    assert (snap.preset_id, snap.template_name, snap.preset_name, snap.version_name) == (
        PRESET,
        "tpl",
        "small",
        "v1",
    )
    assert (snap.ttl_seconds, snap.timezone, snap.schedules, snap.last_invalidated_at) == (
        3600,
        "Europe/Berlin",
        schedules,
        NOW - MIN,
    )
    assert snap.desired_instances == 5 and snap.active is False
    # No failure inputs given: nothing blocks.
    assert (snap.backoff_until, snap.hard_limited, snap.create_cap) == (None, False, None)


def test_no_pool_means_desired_zero() -> None:
    assert snapshot([], desired_instances=None).desired_instances == 0


def test_failure_inputs_are_merged_and_see_the_preset_and_its_rows() -> None:
    seen: list[tuple[PresetRow, list[PrebuildRow]]] = []

    def inputs(p: PresetRow, rows: list[PrebuildRow]) -> dict[str, Any]:
        seen.append((p, rows))
        return {"hard_limited": True, "hard_limit_reason": "why", "backoff_until": NOW, "create_cap": 2}

    rows = [latest_build("start", completed=True, error="x")]
    snap = preset_snapshot(
        PresetRows(preset_row(desired_instances=2), rows), delete_retry=RETRY, failure_inputs=inputs
    )
    assert seen == [(preset_row(desired_instances=2), rows)]
    assert (snap.hard_limited, snap.hard_limit_reason, snap.backoff_until, snap.create_cap) == (
        True,
        "why",
        NOW,
        2,
    )


# --- grouping and in-flight counting ------------------------------------------------------------------------


def test_group_keeps_every_preset_and_drops_foreign_rows() -> None:
    other = UUID(int=77)
    a, b = (
        preset_row(desired_instances=2),
        preset_row(desired_instances=2, preset_id=other, preset_name="large"),
    )
    mine = latest_build("start", completed=True)
    theirs = latest_build("start", completed=True, preset_id=other)
    orphan = latest_build("start", completed=True, preset_id=None)  # a prebuild without a preset
    unknown = latest_build("start", completed=True, preset_id=UUID(int=78))  # preset not in the snapshot
    grouped = group([a, b], [mine, theirs, orphan, unknown])
    assert list(grouped) == [PRESET, other]
    assert grouped[PRESET].prebuilds == [mine]
    assert grouped[other].prebuilds == [theirs]
    assert group([a], []) == {PRESET: PresetRows(a, [])}


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param([], 0, id="nothing"),
        pytest.param(
            [latest_build("start"), latest_build("start", started=True)], 2, id="pending and running creates"
        ),
        pytest.param(
            [latest_build("stop"), latest_build("delete", started=True)], 2, id="stops and deletes count too"
        ),
        pytest.param([latest_build("start", canceled=True)], 1, id="canceling still holds a slot"),
        pytest.param(
            [
                latest_build("start", completed=True),
                latest_build("start", completed=True, error="x"),
                latest_build("delete", completed=True, error="x"),
                latest_build("start", canceled=True, completed=True),
            ],
            0,
            id="finished jobs do not",
        ),
    ],
)
def test_inflight_jobs(rows: list[PrebuildRow], expected: int) -> None:
    assert inflight_jobs(rows) == expected
