"""Decision tables for the reconcile planner (SPEC §5, §5.1): one row per rule, the state it computes and the
actions it orders; then ``pace``, the global cap on in-flight prebuild jobs; then properties over random
snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prebuildd.domain.planner import (
    CleanupReason,
    Delete,
    DeleteReason,
    Leftover,
    PendingCreate,
    Plan,
    PresetSnapshot,
    PresetState,
    RunningCounts,
    RunningPrebuild,
    needs_rows,
    pace,
    plan_preset,
)
from prebuildd.domain.schedules import Schedule
from tests.support.factories import MIN, NOW, pool_snapshot, running, ws

HOUR = timedelta(hours=1)
EXP = DeleteReason.EXPIRED
EXTRA = DeleteReason.EXTRANEOUS
INACTIVE = DeleteReason.INACTIVE


@dataclass(frozen=True)
class Row:
    """One rule: a snapshot and what the planner must decide for it."""

    snapshot: PresetSnapshot
    deletes: list[tuple[int, DeleteReason]] = field(default_factory=list)
    create: int = 0
    cancels: list[int] = field(default_factory=list)
    reason: str | None = None
    blocked: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    orphans: list[int] = field(default_factory=list)
    wanted: int | None = None


TABLE: dict[str, Row] = {
    # -- desired and create = desired - running_valid - starting, clamped to [0, desired]
    "no pool: nothing to do": Row(pool_snapshot(), reason="at target: desired 0, running 0"),
    "empty pool: create desired": Row(
        pool_snapshot(desired_instances=3), create=3, reason="creating 3: desired 3, running 0"
    ),
    "partial pool: create the difference": Row(
        pool_snapshot(desired_instances=3, running=(running(1),)),
        create=2,
        reason="creating 2: desired 3, running 1",
    ),
    "starting builds count toward desired": Row(
        pool_snapshot(desired_instances=3, running=(running(1),), starting=1),
        create=1,
        reason="creating 1: desired 3, running 1, starting 1",
    ),
    "starting covers the rest: no create": Row(
        pool_snapshot(desired_instances=2, starting=2), reason="at target: desired 2, running 0, starting 2"
    ),
    "more starting than desired: clamped to 0, nothing deleted": Row(
        pool_snapshot(desired_instances=1, starting=3), state={"extraneous": 0}
    ),
    "at target": Row(
        pool_snapshot(desired_instances=2, running=(running(1), running(2))),
        reason="at target: desired 2, running 2",
        state={"eligible": 2},
    ),
    "not-ready prebuilds still fill the pool": Row(
        pool_snapshot(desired_instances=2, running=(running(1, ready=False), running(2))),
        state={"running_valid": 2, "eligible": 1},
    ),
    "stopping and deleting do not fill the pool": Row(
        pool_snapshot(desired_instances=2, stopping=1, deleting=1),
        create=2,
        state={"stopping": 1, "deleting": 1},
    ),
    "failed evidence takes no slot": Row(
        pool_snapshot(desired_instances=2, failed=3), create=2, state={"failed": 3}
    ),
    # -- extraneous: not-ready first, then oldest
    "extraneous: oldest deleted first": Row(
        pool_snapshot(
            desired_instances=1,
            running=(running(1, 30 * MIN), running(2, 20 * MIN), running(3, 10 * MIN)),
        ),
        deletes=[(1, EXTRA), (2, EXTRA)],
        reason="deleting 2 extraneous: desired 1, running 3",
        state={"extraneous": 2},
    ),
    "extraneous: not-ready before older ready": Row(
        pool_snapshot(
            desired_instances=1,
            running=(running(1, 30 * MIN), running(2, 5 * MIN, ready=False), running(3, 10 * MIN)),
        ),
        deletes=[(2, EXTRA), (1, EXTRA)],
    ),
    "extraneous: oldest of the not-ready first": Row(
        pool_snapshot(
            desired_instances=1,
            running=(
                running(1, 30 * MIN),
                running(2, 5 * MIN, ready=False),
                running(3, 9 * MIN, ready=False),
            ),
        ),
        deletes=[(3, EXTRA), (2, EXTRA)],
    ),
    "extraneous ignores starting (only running_valid above desired)": Row(
        pool_snapshot(desired_instances=1, running=(running(1),), starting=2), state={"extraneous": 0}
    ),
    "active preset with desired 0 deletes its pool": Row(
        pool_snapshot(desired_instances=0, running=(running(1), running(2))),
        deletes=[(1, EXTRA), (2, EXTRA)],
        reason="deleting 2 extraneous: desired 0, running 2",
    ),
    # -- expiry: TTL and invalidation
    "TTL: expired deleted and replaced": Row(
        pool_snapshot(
            desired_instances=2, ttl_seconds=3600, running=(running(1, 2 * HOUR), running(2, 10 * MIN))
        ),
        deletes=[(1, EXP)],
        create=1,
        reason="creating 1: desired 2, running 1, expired 1",
        state={"running": 2, "running_valid": 1, "expired": 1},
    ),
    "TTL: expired and extraneous together": Row(
        pool_snapshot(
            desired_instances=1,
            ttl_seconds=3600,
            running=(running(1, 3 * HOUR), running(2, 2 * HOUR), running(3, 50 * MIN), running(4, 10 * MIN)),
        ),
        deletes=[(1, EXP), (2, EXP), (3, EXTRA)],
        state={"expired": 2, "extraneous": 1},
    ),
    "TTL 0: never expires": Row(
        pool_snapshot(desired_instances=1, ttl_seconds=0, running=(running(1, timedelta(days=400)),)),
        state={"expired": 0},
    ),
    "invalidated: built before it expired, after it valid": Row(
        pool_snapshot(
            desired_instances=2,
            last_invalidated_at=NOW - 5 * MIN,
            running=(running(1, 10 * MIN), running(2, 1 * MIN)),
        ),
        deletes=[(1, EXP)],
        create=1,
    ),
    "invalidated: whole pool replaced": Row(
        pool_snapshot(desired_instances=2, last_invalidated_at=NOW, running=(running(1), running(2))),
        deletes=[(1, EXP), (2, EXP)],
        create=2,
        reason="creating 2: desired 2, running 0, expired 2",
    ),
    # -- inactive presets
    "inactive: desired 0, running and expired deleted": Row(
        pool_snapshot(
            active=False,
            desired_instances=3,
            ttl_seconds=3600,
            running=(running(1, 2 * HOUR), running(2)),
        ),
        deletes=[(1, INACTIVE), (2, INACTIVE)],
        reason="inactive: removing 2 prebuilds",
        state={"desired": 0, "expired": 1, "extraneous": 1},
    ),
    "inactive: ready prebuilds are not eligible (a claim cannot take them)": Row(
        pool_snapshot(active=False, desired_instances=2, running=(running(1), running(2))),
        deletes=[(1, INACTIVE), (2, INACTIVE)],
        reason="inactive: removing 2 prebuilds",
        state={"desired": 0, "running": 2, "eligible": 0, "extraneous": 2},
    ),
    "inactive: pending never-started creates canceled": Row(
        pool_snapshot(
            active=False,
            desired_instances=2,
            starting=3,
            pending_creates=(PendingCreate(UUID(int=7), ws(7)), PendingCreate(UUID(int=8), ws(8))),
        ),
        cancels=[7, 8],
        reason="inactive, canceling 2 pending creates",
    ),
    "inactive: schedule ignored": Row(
        pool_snapshot(active=False, schedules=(Schedule("* * * * *", 5),), desired_instances=1),
        reason="inactive",
        state={"desired": 0},
    ),
    "inactive: never creates even with nothing blocking": Row(
        pool_snapshot(active=False, desired_instances=4), state={"desired": 0}
    ),
    "active: pending creates are just starting, never canceled": Row(
        pool_snapshot(desired_instances=2, starting=2, pending_creates=(PendingCreate(UUID(int=7), ws(7)),))
    ),
    # -- leftovers: deleted whatever the preset
    "leftover: stopped prebuild deleted": Row(
        pool_snapshot(
            desired_instances=1, running=(running(1),), leftovers=(Leftover(ws(5), CleanupReason.STOPPED),)
        ),
        deletes=[(5, DeleteReason.STOPPED)],
    ),
    "leftover: canceled create is an orphan delete": Row(
        pool_snapshot(leftovers=(Leftover(ws(5), CleanupReason.CANCELED),)),
        deletes=[(5, DeleteReason.CANCELED)],
        orphans=[5],
    ),
    "leftover: create canceled after it started is a real delete": Row(
        pool_snapshot(leftovers=(Leftover(ws(5), CleanupReason.CANCELED_STARTED),)),
        deletes=[(5, DeleteReason.CANCELED)],
    ),
    "leftover: failed delete retried after retry_at": Row(
        pool_snapshot(leftovers=(Leftover(ws(5), CleanupReason.DELETE_FAILED, NOW - MIN),)),
        deletes=[(5, DeleteReason.DELETE_FAILED)],
    ),
    "leftover: failed delete retried at retry_at exactly": Row(
        pool_snapshot(leftovers=(Leftover(ws(5), CleanupReason.DELETE_FAILED, NOW),)),
        deletes=[(5, DeleteReason.DELETE_FAILED)],
    ),
    "leftover: failed delete waits before retry_at": Row(
        pool_snapshot(leftovers=(Leftover(ws(5), CleanupReason.DELETE_FAILED, NOW + timedelta(seconds=1)),)),
    ),
    "leftover: deleted for inactive presets too, before running ones": Row(
        pool_snapshot(
            active=False,
            running=(running(1),),
            leftovers=(Leftover(ws(5), CleanupReason.STOPPED), Leftover(ws(6), CleanupReason.CANCELED)),
        ),
        deletes=[(5, DeleteReason.STOPPED), (6, DeleteReason.CANCELED), (1, INACTIVE)],
        orphans=[6],
    ),
    "leftover: not running, so the pool is refilled": Row(
        pool_snapshot(desired_instances=1, leftovers=(Leftover(ws(5), CleanupReason.STOPPED),)),
        deletes=[(5, DeleteReason.STOPPED)],
        create=1,
    ),
    # -- gates: hard limit, backoff, slow start
    "hard-limited: no creates, deletes still run": Row(
        pool_snapshot(
            desired_instances=2,
            ttl_seconds=60,
            running=(running(1, HOUR),),
            hard_limited=True,
            hard_limit_reason="last 3 creations failed: parameter `repo` is required",
        ),
        deletes=[(1, EXP)],
        reason="creating 2: desired 2, running 0, expired 1",
        blocked="hard-limited: last 3 creations failed: parameter `repo` is required",
        wanted=2,
    ),
    "hard-limited without a reason": Row(
        pool_snapshot(desired_instances=1, hard_limited=True), blocked="hard-limited", wanted=1
    ),
    "hard-limited at target: nothing to block": Row(
        pool_snapshot(desired_instances=1, running=(running(1),), hard_limited=True)
    ),
    "hard-limited: extraneous still deleted": Row(
        pool_snapshot(desired_instances=0, running=(running(1),), hard_limited=True), deletes=[(1, EXTRA)]
    ),
    "backing off: no creates, deletes still run": Row(
        pool_snapshot(
            desired_instances=1,
            running=(running(1, 30 * MIN), running(2)),
            last_invalidated_at=NOW - 20 * MIN,
            backoff_until=NOW + MIN,
            backoff_reason="2 failed builds, last: exit 1",
        ),
        deletes=[(1, EXP)],
        blocked=None,  # running_valid 1 = desired: nothing to create, so nothing blocked
    ),
    "backing off blocks the creates": Row(
        pool_snapshot(
            desired_instances=3, backoff_until=NOW + MIN, backoff_reason="2 failed builds, last: exit 1"
        ),
        blocked="backing off until 2026-03-02 12:01:00Z (2 failed builds, last: exit 1)",
        reason="creating 3: desired 3, running 0",
        wanted=3,
    ),
    "backing off without a reason": Row(
        pool_snapshot(desired_instances=1, backoff_until=NOW + timedelta(seconds=1)),
        blocked="backing off until 2026-03-02 12:00:01Z",
        wanted=1,
    ),
    "backoff ends at backoff_until": Row(pool_snapshot(desired_instances=2, backoff_until=NOW), create=2),
    "backoff in the past": Row(pool_snapshot(desired_instances=2, backoff_until=NOW - MIN), create=2),
    "hard limit wins over backoff in the message": Row(
        pool_snapshot(desired_instances=1, hard_limited=True, backoff_until=NOW + MIN),
        blocked="hard-limited",
        wanted=1,
    ),
    "slow start caps creates": Row(
        pool_snapshot(desired_instances=5, create_cap=2),
        create=2,
        blocked="slow start after failures: 2 of 5 this cycle",
        wanted=5,
        reason="creating 5: desired 5, running 0",
    ),
    "slow start cap above the need": Row(pool_snapshot(desired_instances=3, create_cap=4), create=3),
    "slow start cap equal to the need": Row(pool_snapshot(desired_instances=3, create_cap=3), create=3),
    "backoff beats slow start": Row(
        pool_snapshot(desired_instances=3, create_cap=1, backoff_until=NOW + MIN),
        blocked="backing off until 2026-03-02 12:01:00Z",
        wanted=3,
    ),
    # -- desired from schedules (details in test_schedules.py)
    "schedule sets desired": Row(
        pool_snapshot(desired_instances=1, schedules=(Schedule("* 8-18 * * 1-5", 4),)),
        create=4,
        state={"desired": 4, "schedule_problem": None},
    ),
    "schedule not matching: desired_instances": Row(
        pool_snapshot(desired_instances=1, schedules=(Schedule("* 0-5 * * *", 4),)), create=1
    ),
    "schedule in the preset's timezone": Row(
        # 12:00Z is 21:00 in Tokyo: outside 8-18 there.
        pool_snapshot(desired_instances=1, timezone="Asia/Tokyo", schedules=(Schedule("* 8-18 * * *", 4),)),
        create=1,
    ),
    "schedule to zero deletes the pool": Row(
        pool_snapshot(desired_instances=2, schedules=(Schedule("* 12 * * *", 0),), running=(running(1),)),
        deletes=[(1, EXTRA)],
        state={"desired": 0},
    ),
    "invalid schedule: fallback and problem": Row(
        pool_snapshot(desired_instances=1, schedules=(Schedule("0 8-18 * * *", 4),)),
        create=1,
        state={
            "desired": 1,
            "schedule_problem": "schedule '0 8-18 * * *': the minute field must be '*' "
            "(schedules are sets of whole hours); schedules ignored",
        },
    ),
}


@pytest.mark.parametrize("name", list(TABLE))
def test_decision_table(name: str) -> None:
    row = TABLE[name]
    plan = plan_preset(row.snapshot, NOW)
    assert [(d.workspace_id, d.reason) for d in plan.deletes] == [(ws(n), r) for n, r in row.deletes]
    assert [d.workspace_id for d in plan.deletes if d.orphan] == [ws(n) for n in row.orphans]
    assert [c.job_id for c in plan.cancels] == [UUID(int=n) for n in row.cancels]
    assert plan.create == row.create
    assert plan.blocked == row.blocked
    assert plan.wanted_creates == (row.create if row.wanted is None else row.wanted)
    if row.reason is not None:
        assert plan.reason == row.reason
    for key, value in row.state.items():
        assert getattr(plan.state, key) == value, key
    assert plan.actions == len(plan.cancels) + len(plan.deletes) + plan.create


# --- expiry boundaries --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "expired"),
    [
        pytest.param(HOUR - timedelta(microseconds=1), False, id="one microsecond short of the TTL"),
        pytest.param(HOUR, False, id="exactly the TTL: expiry is strictly older"),
        pytest.param(HOUR + timedelta(microseconds=1), True, id="one microsecond past the TTL"),
        pytest.param(HOUR + timedelta(seconds=1), True, id="past the TTL"),
        pytest.param(timedelta(0), False, id="brand new"),
    ],
)
def test_ttl_boundary(age: timedelta, expired: bool) -> None:
    plan = plan_preset(pool_snapshot(desired_instances=1, ttl_seconds=3600, running=(running(1, age),)), NOW)
    assert plan.state.expired == int(expired)
    assert plan.create == int(expired)
    assert [d.reason for d in plan.deletes] == ([EXP] if expired else [])


@pytest.mark.parametrize(
    ("created_vs_invalidation", "expired"),
    [
        pytest.param(-timedelta(microseconds=1), True, id="created just before the invalidation"),
        pytest.param(timedelta(0), False, id="created at the invalidation instant"),
        pytest.param(timedelta(seconds=1), False, id="created after the invalidation"),
    ],
)
def test_invalidation_boundary(created_vs_invalidation: timedelta, expired: bool) -> None:
    invalidated = NOW - 10 * MIN
    prebuild = RunningPrebuild(ws(1), invalidated + created_vs_invalidation)
    plan = plan_preset(
        pool_snapshot(desired_instances=1, last_invalidated_at=invalidated, running=(prebuild,)), NOW
    )
    assert plan.state.expired == int(expired)


def test_the_first_of_ttl_and_invalidation_expires() -> None:
    s = pool_snapshot(desired_instances=3, ttl_seconds=3600, last_invalidated_at=NOW - 30 * MIN)
    s = replace(s, running=(running(1, 2 * HOUR), running(2, 45 * MIN), running(3, 10 * MIN)))
    plan = plan_preset(s, NOW)
    assert [(d.workspace_id, d.reason) for d in plan.deletes] == [(ws(1), EXP), (ws(2), EXP)]
    assert plan.create == 2


# --- pause --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "empty pool: create desired",
        "extraneous: oldest deleted first",
        "TTL: expired deleted and replaced",
        "inactive: desired 0, running and expired deleted",
        "inactive: pending never-started creates canceled",
        "leftover: canceled create is an orphan delete",
        "slow start caps creates",
    ],
)
def test_paused_plans_no_action_but_computes_the_state(name: str) -> None:
    s = TABLE[name].snapshot
    paused = plan_preset(s, NOW, paused=True)
    assert paused.actions == 0 and paused.cancels == () and paused.deletes == () and paused.create == 0
    assert paused.blocked == "paused"
    assert paused.reason == "reconciliation is paused"
    assert paused.state == plan_preset(s, NOW).state


# --- pace: the global cap on in-flight prebuild jobs ----------------------------------------------------------


def plan(n: int, *, create: int = 0, deletes: int = 0, orphans: int = 0, cancels: int = 0, **kw: Any) -> Plan:
    state = PresetState(0, 0, 0, 0, 0, 0, 0, 0, 0)
    return Plan(
        UUID(int=n),
        state,
        cancels=tuple(PendingCreate(UUID(int=n * 100 + i), ws(n * 100 + i)) for i in range(cancels)),
        deletes=tuple(Delete(ws(n * 100 + 50 + i), EXTRA) for i in range(deletes))
        + tuple(Delete(ws(n * 100 + 80 + i), DeleteReason.CANCELED, orphan=True) for i in range(orphans)),
        create=create,
        wanted_creates=create,
        **kw,
    )


def shape(plans: list[Plan]) -> list[tuple[int, int, int, int]]:
    """(cancels, job deletes, orphan deletes, creates) per plan."""
    return [
        (len(p.cancels), sum(not d.orphan for d in p.deletes), sum(d.orphan for d in p.deletes), p.create)
        for p in plans
    ]


@pytest.mark.parametrize(
    ("plans", "inflight", "cap", "expected"),
    [
        pytest.param([plan(1, create=3), plan(2, create=4)], 0, 20, [(0, 0, 0, 3), (0, 0, 0, 4)], id="room"),
        pytest.param(
            [plan(1, create=3), plan(2, create=4)], 0, 5, [(0, 0, 0, 3), (0, 0, 0, 2)], id="plan order"
        ),
        pytest.param(
            [plan(1, create=3), plan(2, create=4)], 4, 5, [(0, 0, 0, 1), (0, 0, 0, 0)], id="in flight"
        ),
        pytest.param([plan(1, create=3)], 5, 5, [(0, 0, 0, 0)], id="cap reached"),
        pytest.param([plan(1, create=3)], 9, 5, [(0, 0, 0, 0)], id="over the cap: no negative budget"),
        pytest.param(
            [plan(1, create=3), plan(2, deletes=3)], 0, 4, [(0, 0, 0, 1), (0, 3, 0, 0)], id="deletes first"
        ),
        pytest.param(
            [plan(1, deletes=2, create=2), plan(2, deletes=3)],
            0,
            4,
            [(0, 2, 0, 0), (0, 2, 0, 0)],
            id="deletes of every plan before any create",
        ),
        pytest.param(
            [plan(1, deletes=2, orphans=2, cancels=2, create=1)],
            20,
            20,
            [(2, 0, 2, 0)],
            id="cancels and orphan deletes never held back",
        ),
        pytest.param([plan(1), plan(2)], 30, 20, [(0, 0, 0, 0), (0, 0, 0, 0)], id="nothing to do"),
        pytest.param([plan(1, create=2)], 0, 0, [(0, 0, 0, 0)], id="cap 0 blocks every job"),
    ],
)
def test_pace(plans: list[Plan], inflight: int, cap: int, expected: list[tuple[int, int, int, int]]) -> None:
    paced = pace(plans, inflight, cap)
    assert shape(paced) == expected
    assert [p.preset_id for p in paced] == [p.preset_id for p in plans]


def test_pace_says_why_creates_were_held_back() -> None:
    paced = pace([plan(1, create=3), plan(2, create=4)], 0, 5)
    assert paced[0].blocked is None
    assert paced[1].blocked == "paced: 2 of 4 creates (max 5 prebuild jobs in flight)"
    assert paced[1].wanted_creates == 4


def test_pace_keeps_an_earlier_reason() -> None:
    paced = pace([plan(1, create=2, blocked="slow start after failures: 2 of 5 this cycle")], 19, 20)
    assert paced[0].create == 1
    assert paced[0].blocked == "slow start after failures: 2 of 5 this cycle"


def test_pace_keeps_the_first_deletes_in_plan_order() -> None:
    original = plan(1, deletes=3)
    paced = pace([original], 0, 2)
    assert paced[0].deletes == original.deletes[:2]


def test_pace_leaves_untouched_plans_alone() -> None:
    plans = [plan(1, create=1, deletes=1)]
    assert pace(plans, 0, 20) == plans


# --- properties over random snapshots -----------------------------------------------------------------------

ages = st.integers(min_value=0, max_value=6 * 60).map(lambda m: timedelta(minutes=m))


leftover_kinds = st.tuples(st.sampled_from(list(CleanupReason)), st.sampled_from([NOW - MIN, NOW, NOW + MIN]))


@st.composite
def snapshots(draw: st.DrawFn) -> PresetSnapshot:
    n = draw(st.integers(0, 6))
    prebuilds = tuple(RunningPrebuild(ws(i), NOW - draw(ages), draw(st.booleans())) for i in range(n))
    pending = draw(st.integers(0, 3))
    return pool_snapshot(
        active=draw(st.booleans()),
        desired_instances=draw(st.integers(0, 6)),
        ttl_seconds=draw(st.sampled_from([0, 1800, 3600, 4 * 3600])),
        last_invalidated_at=draw(st.none() | ages.map(lambda a: NOW - a)),
        running=prebuilds,
        starting=pending + draw(st.integers(0, 3)),
        pending_creates=tuple(PendingCreate(UUID(int=i), ws(100 + i)) for i in range(pending)),
        leftovers=tuple(
            Leftover(ws(200 + i), reason, retry_at if reason is CleanupReason.DELETE_FAILED else None)
            for i, (reason, retry_at) in enumerate(draw(st.lists(leftover_kinds, max_size=3)))
        ),
        hard_limited=draw(st.booleans()),
        backoff_until=draw(st.none() | st.sampled_from([NOW - MIN, NOW, NOW + MIN])),
        create_cap=draw(st.none() | st.integers(1, 4)),
        schedules=draw(st.sampled_from([(), (Schedule("* 8-18 * * *", 3),), (Schedule("* 0-5 * * *", 0),)])),
    )


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_planner_properties(s: PresetSnapshot) -> None:
    p = plan_preset(s, NOW)
    state = p.state
    # The invariant of §5.1: creates never push running_valid + starting above desired.
    assert p.create >= 0
    if p.create:
        assert state.running_valid + state.starting + p.create <= state.desired
    assert p.wanted_creates == max(
        min(state.desired - state.running_valid - state.starting, state.desired), 0
    )
    assert p.create <= p.wanted_creates
    if s.create_cap is not None:
        assert p.create <= s.create_cap
    # Gates block creates only.
    if s.hard_limited or (s.backoff_until is not None and s.backoff_until > NOW) or not s.active:
        assert p.create == 0
    # No workspace deleted twice; only known workspaces deleted.
    deleted = [d.workspace_id for d in p.deletes]
    assert len(deleted) == len(set(deleted))
    known = {r.workspace_id for r in s.running} | {left.workspace_id for left in s.leftovers}
    assert set(deleted) <= known
    # Expired prebuilds are always deleted, whatever blocks creation; extraneous only on active presets.
    reasons = {d.workspace_id: d.reason for d in p.deletes}
    assert sum(r is EXP for r in reasons.values()) == (state.expired if s.active else 0)
    if s.active:
        assert sum(r is EXTRA for r in reasons.values()) == state.extraneous
        assert p.cancels == ()
        # What stays running after the deletes is exactly min(running_valid, desired).
        assert state.running - state.expired - state.extraneous == min(state.running_valid, state.desired)
    else:
        assert state.desired == 0
        assert p.cancels == s.pending_creates
        assert {w for w, r in reasons.items() if r is INACTIVE} == {r.workspace_id for r in s.running}
    # Leftovers are deleted once due, on any preset, and only canceled creates skip infrastructure code.
    due = [left for left in s.leftovers if left.retry_at is None or left.retry_at <= NOW]
    assert [d.workspace_id for d in p.deletes[: len(due)]] == [left.workspace_id for left in due]
    assert {d.workspace_id for d in p.deletes if d.orphan} == {
        left.workspace_id for left in due if left.reason is CleanupReason.CANCELED
    }
    # Pausing changes actions, never the state.
    paused = plan_preset(s, NOW, paused=True)
    assert paused.actions == 0 and paused.state == state


@settings(max_examples=200, deadline=None)
@given(st.lists(snapshots(), max_size=4), st.integers(0, 25), st.integers(0, 25))
def test_pace_properties(snaps: list[PresetSnapshot], inflight: int, cap: int) -> None:
    plans = [replace(plan_preset(s, NOW), preset_id=UUID(int=i)) for i, s in enumerate(snaps)]
    paced = pace(plans, inflight, cap)
    jobs = sum(p.create + sum(not d.orphan for d in p.deletes) for p in paced)
    assert jobs <= max(cap - inflight, 0)
    for before, after in zip(plans, paced, strict=True):
        assert after.cancels == before.cancels
        assert [d for d in after.deletes if d.orphan] == [d for d in before.deletes if d.orphan]
        assert set(after.deletes) <= set(before.deletes)
        assert after.create <= before.create
        assert after.state == before.state
    # Deletes before creates: a create survives only if every job delete did.
    if any(p.create for p in paced):
        assert all(len(a.deletes) == len(b.deletes) for a, b in zip(plans, paced, strict=True))
    # Nothing is held back while there is room.
    if jobs < max(cap - inflight, 0):
        assert paced == plans


@settings(max_examples=300, deadline=None)
@given(snapshots())
def test_a_pool_read_as_counts_plans_as_its_rows(s: PresetSnapshot) -> None:
    """The snapshot reader reads a pool as counts when none of its running prebuilds is expired and it has no
    leftovers, jobs in flight or failures; then the counts plan exactly as the rows would, or ``needs_rows``
    says that its deletes need the rows."""
    at_rest = replace(
        s,
        running=tuple(
            r for r in s.running if not (s.last_invalidated_at and r.created_at < s.last_invalidated_at)
        ),
        ttl_seconds=0,
        starting=0,
        pending_creates=(),
        leftovers=(),
    )
    counts = replace(
        at_rest,
        running=(),
        running_counts=RunningCounts(len(at_rest.running), sum(1 for r in at_rest.running if r.ready)),
    )
    from_rows = plan_preset(at_rest, NOW)
    if needs_rows(counts, NOW):
        assert from_rows.deletes, "the counts were enough: nothing to delete"
        with pytest.raises(ValueError):
            plan_preset(counts, NOW)
        return
    assert plan_preset(counts, NOW) == from_rows
    assert plan_preset(counts, NOW, paused=True) == plan_preset(at_rest, NOW, paused=True)
