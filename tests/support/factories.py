"""Rows and snapshots for the pure planner, snapshot, failure and status tests: one factory per shape, with
the defaults every such test builds on (a call passes what its test is about)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prebuildd.domain.jobs import job_status
from prebuildd.domain.planner import PresetSnapshot, RunningPrebuild
from prebuildd.domain.snapshot import PrebuildRow, PresetRow

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday
MIN = timedelta(minutes=1)
PRESET = UUID(int=2)
VERSION = UUID(int=1)
SNAPSHOT_PRESET = UUID(int=1)
_ids = itertools.count(1000)


def preset_row(desired_instances: int = 1, **changes: Any) -> PresetRow:
    """The preset row a snapshot query returns: preset ``small`` of template ``tpl``, version v1, active."""
    base = PresetRow(
        preset_id=PRESET,
        preset_name="small",
        template_id=UUID(int=3),
        template_name="tpl",
        organization_id=UUID(int=4),
        version_id=VERSION,
        version_name="v1",
        active=True,
        desired_instances=desired_instances,
    )
    return replace(base, **changes)


def prebuild_row(
    status: str,
    ago: timedelta,
    *,
    took: timedelta = MIN / 2,
    failure_class: str | None = None,
    error: str | None = None,
    version: UUID = VERSION,
    transition: str = "start",
) -> PrebuildRow:
    """The latest build of one prebuild by its status: created ``ago`` before NOW, finished ``took`` later
    when finished; a failure is a build failure with an exit status unless told otherwise."""
    created = NOW - ago
    finished = status in ("succeeded", "failed", "canceled")
    if status == "failed" and failure_class is None:
        failure_class = "build"
    if status == "failed" and error is None:
        error = "exit status 1"
    return PrebuildRow(
        workspace_id=UUID(int=next(_ids)),
        workspace_created_at=created,
        preset_id=PRESET,
        version_id=version,
        transition=transition,
        job_id=UUID(int=next(_ids)),
        job_status=status,
        build_created_at=created,
        job_started_at=created if status != "pending" else None,
        job_completed_at=created + took if finished else None,
        failure_class=failure_class,
        error=error,
    )


def latest_build(
    transition: str,
    *,
    started: bool = False,
    canceled: bool = False,
    completed: bool = False,
    error: str | None = None,
    ago: timedelta = 10 * MIN,
    ready: bool = True,
    preset_id: UUID | None = PRESET,
) -> PrebuildRow:
    """A latest build whose status follows the generated-column rule of SPEC §2 from its timestamps."""
    created = NOW - ago
    # A job canceled while pending completes without ever starting.
    started_at = created + MIN if started or (completed and not canceled) else None
    completed_at = created + 2 * MIN if completed else None
    status = job_status(
        started_at=started_at,
        canceled_at=created + MIN if canceled else None,
        completed_at=completed_at,
        error=error,
    )
    return PrebuildRow(
        workspace_id=UUID(int=next(_ids)),
        workspace_created_at=created - MIN,
        preset_id=preset_id,
        version_id=VERSION,
        transition=transition,
        job_id=UUID(int=next(_ids)),
        job_status=status.value,
        build_created_at=created,
        job_started_at=started_at,
        job_completed_at=completed_at,
        failure_class="build" if error else None,
        error=error,
        ready=ready,
    )


def ws(n: int) -> UUID:
    """The id of prebuilt workspace number ``n``."""
    return UUID(int=1000 + n)


def running(n: int, age: timedelta = 10 * MIN, ready: bool = True) -> RunningPrebuild:
    return RunningPrebuild(ws(n), NOW - age, ready)


def pool_snapshot(**changes: Any) -> PresetSnapshot:
    """A preset's snapshot as the planner sees it: ``small`` of ``tpl``, active, wanting no instance."""
    base = PresetSnapshot(
        preset_id=SNAPSHOT_PRESET,
        template_name="tpl",
        preset_name="small",
        version_name="v1",
        active=True,
        desired_instances=0,
    )
    return replace(base, **changes)
