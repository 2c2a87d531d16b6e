"""The status word and next action of a pool, from its snapshot and plan (no database): a decision table."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from prebuildd.domain.planner import plan_preset
from prebuildd.domain.status import PoolStatus, derive_status, pool_status
from tests.support.factories import NOW, pool_snapshot, running

LATER = NOW + timedelta(minutes=5)
EARLIER = NOW - timedelta(minutes=5)


@pytest.mark.parametrize(
    ("paused", "active", "hard_limited", "backing_off", "expected"),
    [
        (False, True, False, False, PoolStatus.HEALTHY),
        (False, True, False, True, PoolStatus.BACKING_OFF),
        (False, True, True, False, PoolStatus.HARD_LIMITED),
        (False, True, True, True, PoolStatus.HARD_LIMITED),  # the limit outranks the backoff
        (False, False, False, False, PoolStatus.INACTIVE),
        (False, False, True, True, PoolStatus.INACTIVE),  # an inactive version is never limited
        (True, True, False, False, PoolStatus.PAUSED),
        (True, False, True, True, PoolStatus.PAUSED),  # a pause outranks everything
    ],
)
def test_status_word(
    paused: bool, active: bool, hard_limited: bool, backing_off: bool, expected: PoolStatus
) -> None:
    assert (
        pool_status(paused=paused, active=active, hard_limited=hard_limited, backing_off=backing_off)
        == expected
    )


@pytest.mark.parametrize(
    ("changes", "paused", "status", "backoff_until", "blocked_prefix"),
    [
        pytest.param({}, False, "healthy", None, None, id="empty pool creates"),
        pytest.param({"backoff_until": LATER}, False, "backing_off", LATER, "backing off", id="backing off"),
        pytest.param({"backoff_until": NOW}, False, "healthy", None, None, id="backoff ends at its instant"),
        pytest.param({"backoff_until": EARLIER}, False, "healthy", None, None, id="backoff over"),
        pytest.param(
            {"hard_limited": True, "hard_limit_reason": "last 3 creations failed"},
            False,
            "hard_limited",
            None,
            "hard-limited",
            id="hard-limited",
        ),
        pytest.param({"active": False}, False, "inactive", None, None, id="inactive version"),
        pytest.param(
            {"backoff_until": LATER}, True, "paused", LATER, "paused", id="paused while backing off"
        ),
    ],
)
def test_derived_status(
    changes: dict[str, Any],
    paused: bool,
    status: str,
    backoff_until: datetime | None,
    blocked_prefix: str | None,
) -> None:
    s = pool_snapshot(template_name="t", desired_instances=3, **changes)
    plan = plan_preset(s, NOW, paused=paused)
    derived = derive_status(s, plan, NOW, paused=paused)
    assert derived.status == status
    assert derived.backoff_until == backoff_until
    assert derived.blocked == plan.blocked
    if blocked_prefix is None:
        assert derived.blocked is None
    else:
        assert derived.blocked is not None and derived.blocked.startswith(blocked_prefix)


FAILED = "create.sh exited with 3\nfailing on purpose\n(see the build log)"


@pytest.mark.parametrize(
    ("changes", "paused", "status", "next_action", "error"),
    [
        pytest.param({}, False, "healthy", "creating 3: desired 3, running 0", None, id="empty pool creates"),
        pytest.param(
            {"running": (running(1), running(2), running(3))},
            False,
            "healthy",
            "at target: desired 3, running 3",
            None,
            id="at target",
        ),
        pytest.param(
            {
                "running": (running(1),),
                "backoff_until": LATER,
                "backoff_reason": f"2 failed builds, last: {FAILED}",
            },
            False,
            "backing_off",
            "create 2 at 12:05:00Z: desired 3, running 1",
            f"2 failed builds, last: {FAILED}",
            id="backing off waits, never 'creating'",
        ),
        pytest.param(
            {"running": (running(1), running(2), running(3)), "backoff_until": LATER, "backoff_reason": "x"},
            False,
            "backing_off",
            "at target: desired 3, running 3",
            "x",
            id="backing off at target has nothing to create",
        ),
        pytest.param(
            {"backoff_until": EARLIER, "backoff_reason": "old"},
            False,
            "healthy",
            "creating 3: desired 3, running 0",
            None,
            id="backoff over: creating again",
        ),
        pytest.param(
            {"hard_limited": True, "hard_limit_reason": f"last 3 creations failed: {FAILED}"},
            False,
            "hard_limited",
            "no creates: desired 3, running 0; `prebuildd prebuilds retry` resumes them",
            f"last 3 creations failed: {FAILED}",
            id="hard-limited",
        ),
        pytest.param(
            {
                "hard_limited": True,
                "hard_limit_reason": "limit",
                "backoff_until": LATER,
                "backoff_reason": "b",
            },
            False,
            "hard_limited",
            "no creates: desired 3, running 0; `prebuildd prebuilds retry` resumes them",
            "limit",
            id="hard limit outranks the backoff",
        ),
        pytest.param(
            {"create_cap": 1},
            False,
            "healthy",
            "creating 1 of 3 (slow start after failures): desired 3, running 0",
            None,
            id="slow start",
        ),
        pytest.param(
            {"backoff_until": LATER, "backoff_reason": "b"},
            True,
            "paused",
            "nothing while paused: desired 3, running 0",
            None,
            id="paused",
        ),
        pytest.param(
            {"active": False, "running": (running(1),)},
            False,
            "inactive",
            "inactive: removing 1 prebuild",
            None,
            id="inactive, one prebuild (singular)",
        ),
    ],
)
def test_next_action_agrees_with_the_status(
    changes: dict[str, Any], paused: bool, status: str, next_action: str, error: str | None
) -> None:
    s = pool_snapshot(template_name="t", desired_instances=3, **changes)
    derived = derive_status(s, plan_preset(s, NOW, paused=paused), NOW, paused=paused)
    assert (derived.status, derived.next_action, derived.error) == (status, next_action, error)
    if status != "healthy":
        assert not derived.next_action.startswith("creating"), "only a healthy pool is creating"
