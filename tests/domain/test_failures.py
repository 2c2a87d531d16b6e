"""Failure maths of SPEC §6: database-derived build backoff (§6.1), transient backoff (§6.2), hard limit (§6.3)
and the slow start of §5.1, all from the rows a snapshot holds."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from prebuildd.domain.failures import (
    LOST_DAEMON_STREAK,
    FailurePolicy,
    HardLimit,
    build_backoff,
    failure_inputs,
    hard_limit,
    slow_start_cap,
    transient_backoff,
)
from prebuildd.domain.planner import plan_preset
from prebuildd.domain.snapshot import PrebuildRow, PresetRow, group, preset_snapshot
from prebuildd.domain.words import plural
from tests.support.factories import MIN, NOW, prebuild_row, preset_row

OLD_VERSION = UUID(int=9)
POLICY = FailurePolicy()


def ok(minutes_ago: float) -> PrebuildRow:
    return prebuild_row("succeeded", minutes_ago * MIN)


def fail(minutes_ago: float, **kw: Any) -> PrebuildRow:
    return prebuild_row("failed", minutes_ago * MIN, **kw)


def infra(minutes_ago: float, **kw: Any) -> PrebuildRow:
    return prebuild_row("failed", minutes_ago * MIN, failure_class="infrastructure", **kw)


def lost(minutes_ago: float, **kw: Any) -> PrebuildRow:
    return prebuild_row(
        "failed",
        minutes_ago * MIN,
        failure_class="daemon_lost",
        error="its daemon r/embedded-0 restarted",
        **kw,
    )


# --- §6.1 build backoff -------------------------------------------------------------------------------------


def test_no_creations_no_backoff() -> None:
    assert build_backoff(preset_row(), [], NOW, POLICY) is None


def test_backoff_waits_from_the_completion_not_the_creation() -> None:
    # A build that ran 20 minutes and failed 30 s ago: the reference (creation time + 1 interval) would let the
    # next create go at once; SPEC waits one interval from the failure.
    row = fail(20.5, took=20 * MIN, error="apply failed")
    backoff = build_backoff(preset_row(), [row], NOW, POLICY)
    assert backoff is not None
    assert backoff.until == NOW - MIN / 2 + MIN
    assert backoff.failures == 1
    assert backoff.reason == "1 failed build, last: apply failed"  # one failure, one noun


@pytest.mark.parametrize(
    ("rows", "desired", "expected_failures"),
    [
        pytest.param([fail(1)], 1, 1, id="newest failed"),
        pytest.param([ok(1), fail(2)], 1, None, id="newest of 1 succeeded: no backoff"),
        pytest.param([ok(1), fail(2)], 2, 1, id="failure among newest 2"),
        pytest.param([ok(1), ok(2), fail(3)], 2, None, id="failure outside newest 2"),
        pytest.param([ok(1), ok(2), fail(3)], 3, 1, id="failure among newest 3"),
        pytest.param([fail(1), fail(2), fail(3)], 3, 3, id="three failures, desired 3"),
        pytest.param([fail(1), ok(2), fail(3)], 3, 2, id="two of three failed"),
        pytest.param([fail(61)], 1, None, id="failure created before the lookback"),
        pytest.param([fail(60)], 1, 1, id="failure created exactly at the lookback edge counts"),
        pytest.param([fail(59), fail(61)], 1, 1, id="only failures within the lookback count"),
        # num_failed counts the failures within the lookback, not only those among the newest `desired`
        # (SPEC: "num_failed = failed ones within the lookback"; the newest `desired` decide whether to wait).
        pytest.param([fail(1), fail(2), fail(3)], 1, 3, id="desired 1: every recent failure adds a wait"),
        pytest.param([fail(1), ok(2), fail(3)], 1, 2, id="desired 1: older recent failure counted"),
        pytest.param([infra(1)], 1, None, id="infrastructure failure is not a build failure"),
        pytest.param([infra(1), fail(2)], 1, 1, id="infrastructure failure skipped in the ranking"),
        pytest.param([prebuild_row("running", MIN), fail(2)], 1, 1, id="in-flight create is not ranked"),
        pytest.param([prebuild_row("canceled", MIN), fail(2)], 1, 1, id="canceled create is not ranked"),
        pytest.param([fail(1, version=OLD_VERSION)], 1, None, id="other version's failure ignored"),
        pytest.param([fail(1, transition="stop")], 1, None, id="failed stop is not a creation"),
        pytest.param([fail(1)], 0, 1, id="desired 0 still looks at the newest creation"),
        pytest.param([fail(1)], None, 1, id="no desired_instances (schedule only) looks at the newest"),
    ],
)
def test_build_backoff_table(
    rows: list[PrebuildRow], desired: int | None, expected_failures: int | None
) -> None:
    backoff = build_backoff(preset_row(desired_instances=desired), rows, NOW, POLICY)
    if expected_failures is None:
        assert backoff is None
        return
    assert backoff is not None
    assert backoff.failures == expected_failures
    counted_failures = [r for r in rows if r.job_status == "failed" and r.failure_class != "infrastructure"]
    newest_completion = max(r.job_completed_at for r in counted_failures if r.job_completed_at)
    assert backoff.until == newest_completion + expected_failures * POLICY.backoff_interval


@pytest.mark.parametrize("failures", [1, 2, 3, 5])
def test_build_backoff_is_num_failed_times_interval(failures: int) -> None:
    policy = FailurePolicy(backoff_interval=timedelta(seconds=90))
    rows = [fail(i + 1, took=timedelta(0)) for i in range(failures)]
    backoff = build_backoff(preset_row(desired_instances=failures), rows, NOW, policy)
    assert backoff is not None
    assert (backoff.until, backoff.failures) == (NOW - MIN + failures * timedelta(seconds=90), failures)


def test_build_backoff_reason_names_the_newest_error() -> None:
    rows = [fail(1, error="quota exceeded"), fail(2, error="older error")]
    backoff = build_backoff(preset_row(desired_instances=2), rows, NOW, POLICY)
    assert backoff is not None and backoff.reason == "2 failed builds, last: quota exceeded"


def test_build_backoff_ignores_failures_before_a_retry() -> None:
    rows = [fail(5), fail(10)]
    assert build_backoff(preset_row(failures_reset_at=NOW - 3 * MIN), rows, NOW, POLICY) is None
    after = build_backoff(preset_row(failures_reset_at=NOW - 7 * MIN, desired_instances=2), rows, NOW, POLICY)
    assert after is not None and after.failures == 1


def test_build_backoff_lookback_is_configurable() -> None:
    policy = FailurePolicy(backoff_lookback=timedelta(minutes=10))
    assert build_backoff(preset_row(), [fail(11)], NOW, policy) is None
    assert build_backoff(preset_row(), [fail(9)], NOW, policy) is not None


# --- §6.2 transient backoff ---------------------------------------------------------------------------------


@pytest.mark.parametrize("consecutive", [1, 2, 3])
def test_transient_backoff_is_linear_in_consecutive_failures(consecutive: int) -> None:
    # Acceptance §11.1: 1x, 2x, 3x the interval after 1, 2, 3 consecutive failures.
    row = preset_row(
        consecutive_failures=consecutive, last_failure_at=NOW, last_error="503 store unavailable"
    )
    backoff = transient_backoff(row, [], NOW, POLICY)
    assert backoff is not None
    assert backoff.until == NOW + consecutive * POLICY.backoff_interval
    assert backoff.failures == consecutive
    assert backoff.reason == f"{plural(consecutive, 'transient failure')}, last: 503 store unavailable"


def test_transient_backoff_is_capped_by_max_backoff() -> None:
    policy = FailurePolicy(backoff_interval=MIN, max_backoff=timedelta(minutes=5))
    row = preset_row(consecutive_failures=100, last_failure_at=NOW)
    backoff = transient_backoff(row, [], NOW, policy)
    assert backoff is not None and backoff.until == NOW + timedelta(minutes=5)


def test_default_max_backoff_is_one_hour() -> None:
    backoff = transient_backoff(preset_row(consecutive_failures=1000, last_failure_at=NOW), [], NOW, POLICY)
    assert backoff is not None and backoff.until == NOW + timedelta(hours=1)


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(preset_row(), id="no record"),
        pytest.param(preset_row(consecutive_failures=0, last_failure_at=NOW), id="cleared record"),
        pytest.param(preset_row(consecutive_failures=2, last_failure_at=None), id="count without time"),
    ],
)
def test_no_transient_record_no_backoff(row: PresetRow) -> None:
    assert transient_backoff(row, [], NOW, POLICY) is None


def test_retry_makes_the_transient_record_stop_counting() -> None:
    # SPEC §2: failures before failures_reset_at no longer count (the retry also deletes the record; the maths
    # must not depend on that).
    row = preset_row(consecutive_failures=3, last_failure_at=NOW - MIN, failures_reset_at=NOW - MIN / 2)
    assert transient_backoff(row, [], NOW, POLICY) is None


@pytest.mark.parametrize(
    ("rows", "expected_failures"),
    [
        pytest.param([infra(1)], 1, id="one infrastructure failure"),
        pytest.param([infra(1), infra(2)], 2, id="two in a row"),
        pytest.param([infra(1), infra(2), infra(3)], 3, id="three in a row"),
        pytest.param([infra(1), ok(2), infra(3)], 1, id="a success between them resets the count"),
        pytest.param([infra(1), fail(2), infra(3)], 2, id="a build failure does not reset it"),
        pytest.param([ok(1), infra(2)], None, id="success after the failure clears it"),
        pytest.param([infra(61)], None, id="outside the lookback"),
        pytest.param(
            [prebuild_row("failed", MIN, failure_class="infrastructure", transition="delete")],
            None,
            id="delete",
        ),
    ],
)
def test_infrastructure_failures_feed_the_transient_backoff(
    rows: list[PrebuildRow], expected_failures: int | None
) -> None:
    backoff = transient_backoff(preset_row(), rows, NOW, POLICY)
    if expected_failures is None:
        assert backoff is None
        return
    assert backoff is not None
    assert backoff.failures == expected_failures
    newest = rows[0]
    assert newest.job_completed_at is not None
    assert backoff.until == newest.job_completed_at + expected_failures * POLICY.backoff_interval
    assert backoff.reason.startswith(f"{plural(expected_failures, 'infrastructure failure')}, last: ")


def test_infrastructure_failures_before_a_retry_do_not_count() -> None:
    row = preset_row(failures_reset_at=NOW - 90 * timedelta(seconds=1))
    assert transient_backoff(row, [infra(2)], NOW, POLICY) is None
    backoff = transient_backoff(row, [infra(1), infra(2)], NOW, POLICY)
    assert backoff is not None and backoff.failures == 1


def test_infrastructure_backoff_is_capped() -> None:
    policy = FailurePolicy(max_backoff=timedelta(minutes=2))
    backoff = transient_backoff(preset_row(), [infra(i / 10) for i in range(1, 6)], NOW, policy)
    assert backoff is not None and backoff.until == NOW - MIN / 10 + MIN / 2 + 2 * MIN


def test_the_later_of_record_and_infrastructure_wins() -> None:
    row = preset_row(consecutive_failures=5, last_failure_at=NOW - MIN, last_error="timeout")
    backoff = transient_backoff(row, [infra(1)], NOW, POLICY)
    assert backoff is not None and backoff.until == NOW + 4 * MIN and "transient" in backoff.reason
    row = preset_row(consecutive_failures=1, last_failure_at=NOW - 10 * MIN)
    backoff = transient_backoff(row, [infra(1)], NOW, POLICY)
    assert backoff is not None and "infrastructure" in backoff.reason


# --- lost daemons: not the template's fault, unless they keep happening ---


@pytest.mark.parametrize(
    ("rows", "expected_failures"),
    [
        pytest.param([lost(1)], None, id="one lost daemon: no backoff"),
        pytest.param([lost(1), lost(2)], None, id="two in a row: no backoff"),
        pytest.param([lost(1), lost(2), lost(3)], 3, id="three in a row: backoff"),
        pytest.param([lost(1), lost(2), lost(3), lost(4)], 4, id="four in a row: longer"),
        pytest.param([lost(1), lost(2), ok(3), lost(4)], None, id="a success resets the streak"),
        pytest.param([lost(1), lost(2), fail(3), lost(4)], None, id="another failure ends the streak"),
        pytest.param([lost(1), lost(2), lost(61)], None, id="only the lookback counts"),
        pytest.param([ok(0.5), lost(1), lost(2), lost(3)], None, id="a newer success: no backoff"),
        pytest.param(
            [lost(3, took=2.5 * MIN), lost(3, took=2.5 * MIN), lost(3, took=2.5 * MIN)],
            None,
            id="three lost together (one replica died): one loss, no backoff",
        ),
        pytest.param(
            [lost(1), lost(2), lost(3, took=2.5 * MIN), lost(3, took=2.5 * MIN)],
            None,
            id="lost together count once: two rounds",
        ),
    ],
)
def test_lost_daemons_back_off_only_after_a_streak(
    rows: list[PrebuildRow], expected_failures: int | None
) -> None:
    assert LOST_DAEMON_STREAK == 3
    backoff = transient_backoff(preset_row(), rows, NOW, POLICY)
    if all(r.failure_class != "build" for r in rows):
        assert build_backoff(preset_row(), rows, NOW, POLICY) is None  # lost daemons are not build failures
    if expected_failures is None:
        assert backoff is None
        return
    assert backoff is not None
    assert backoff.failures == expected_failures
    assert (
        backoff.until == NOW - MIN / 2 + expected_failures * POLICY.backoff_interval
    )  # from the newest loss
    assert backoff.reason == (
        f"{expected_failures} lost-daemon failures in a row, last: its daemon r/embedded-0 restarted"
    )


def test_lost_daemons_are_not_build_failures_and_never_hard_limit() -> None:
    rows = [lost(1), lost(2), lost(3), lost(4)]
    assert build_backoff(preset_row(), rows, NOW, POLICY) is None
    assert not hard_limit(preset_row(), rows, POLICY).limited
    assert slow_start_cap(preset_row(), rows) is None  # no slow start either: the pool refills at once
    assert hard_limit(
        preset_row(), [fail(1), lost(2), fail(3), fail(4)], POLICY
    ).limited  # nor break a series


def test_one_lost_daemon_leaves_the_preset_creating_at_once() -> None:
    inputs = failure_inputs(POLICY, NOW)(preset_row(), [lost(1), lost(2)])
    assert inputs["backoff_until"] is None and not inputs["hard_limited"] and inputs["create_cap"] is None
    inputs = failure_inputs(POLICY, NOW)(preset_row(), [lost(1), lost(2), lost(3)])
    assert inputs["backoff_reason"].startswith("3 lost-daemon failures in a row, last: ")


# --- §6.3 hard limit ----------------------------------------------------------------------------------------

F = "failed"
S = "succeeded"


def history(*statuses: str, spacing: timedelta = MIN) -> list[PrebuildRow]:
    """Creations newest first: history(F, S) is a failure one minute ago after a success two minutes ago."""
    return [prebuild_row(s, (i + 1) * spacing) for i, s in enumerate(statuses)]


@pytest.mark.parametrize(
    ("statuses", "limit", "limited"),
    [
        pytest.param((), 3, False, id="nothing built"),
        pytest.param((F,), 3, False, id="1 failure of limit 3"),
        pytest.param((F, F), 3, False, id="2 failures of limit 3"),
        pytest.param((F, F, F), 3, True, id="3 failures of limit 3"),
        pytest.param((F, F, F, F, F), 3, True, id="5 failures of limit 3"),
        pytest.param((F, F, F), 2, True, id="limit 2 catches 3 failures"),
        pytest.param((F, F), 2, True, id="limit 2 catches 2 failures"),
        pytest.param((F,), 1, True, id="limit 1"),
        pytest.param((F, F, F), 0, False, id="limit 0 disables"),
        pytest.param((F, F, S), 3, False, id="oldest of last 3 succeeded"),
        pytest.param((S, F, F, F), 3, False, id="newest succeeded"),
        pytest.param((F, F, F, S), 3, True, id="success before the last 3"),
        pytest.param((F, S, F, F), 3, False, id="success in the middle"),
    ],
)
def test_hard_limit_table(statuses: tuple[str, ...], limit: int, limited: bool) -> None:
    result = hard_limit(preset_row(), history(*statuses), FailurePolicy(hard_limit=limit))
    assert result.limited is limited


def test_hard_limit_has_no_time_window() -> None:
    rows = history(F, F, F, spacing=timedelta(days=10))
    assert hard_limit(preset_row(), rows, POLICY).limited


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([infra(1), infra(2), infra(3)], id="three infrastructure failures"),
        pytest.param([infra(i) for i in range(1, 20)], id="many infrastructure failures"),
        pytest.param([fail(1), fail(2), infra(3)], id="two build failures and one infrastructure"),
        pytest.param([infra(1), fail(2), fail(3), ok(4)], id="infrastructure does not fill the gap"),
    ],
)
def test_infrastructure_failures_never_hard_limit(rows: list[PrebuildRow]) -> None:
    assert not hard_limit(preset_row(), rows, POLICY).limited


def test_infrastructure_failures_neither_count_nor_break_a_series() -> None:
    rows = [fail(1), infra(2), fail(3), fail(4)]
    assert hard_limit(preset_row(), rows, POLICY).limited


def test_in_flight_creations_do_not_count_yet() -> None:
    # Reading taken: the last N *finished* creations; one still running neither fails nor saves the series.
    rows = [prebuild_row("running", MIN / 2), fail(1), fail(2), fail(3)]
    assert hard_limit(preset_row(), rows, POLICY).limited
    rows = [prebuild_row("pending", MIN / 2), fail(1), fail(2)]
    assert not hard_limit(preset_row(), rows, POLICY).limited


def test_other_versions_do_not_count() -> None:
    rows = [fail(1), fail(2, version=OLD_VERSION), fail(3, version=OLD_VERSION)]
    assert not hard_limit(preset_row(), rows, POLICY).limited


@pytest.mark.parametrize(
    ("reset_minutes_ago", "limited"),
    [
        pytest.param(None, True, id="no retry"),
        pytest.param(0.5, False, id="retry after all failures"),
        pytest.param(2.5, False, id="retry leaves 2 failures"),
        pytest.param(3.5, True, id="retry before the 3 failures"),
        pytest.param(3.0, False, id="failure at the retry instant no longer counts"),
    ],
)
def test_retry_makes_earlier_failures_stop_counting(reset_minutes_ago: float | None, limited: bool) -> None:
    reset = None if reset_minutes_ago is None else NOW - reset_minutes_ago * MIN
    rows = history(F, F, F)
    assert hard_limit(preset_row(failures_reset_at=reset), rows, POLICY).limited is limited


def test_hard_limit_reason_for_config_errors() -> None:
    rows = [
        fail(1, failure_class="config", error="parameter `repo` is required"),
        fail(2, failure_class="config", error="parameter `repo` is required"),
        fail(3, failure_class="config", error="parameter `repo` is required"),
    ]
    result = hard_limit(preset_row(), rows, POLICY)
    assert result == HardLimit(True, "config", "parameter `repo` is required")
    assert result.describe(3) == "last 3 creations failed: parameter `repo` is required"


def test_hard_limit_reason_follows_the_newest_failure() -> None:
    rows = [fail(1, error="terraform apply: exit 1"), fail(2, failure_class="config"), fail(3)]
    result = hard_limit(preset_row(), rows, POLICY)
    assert result == HardLimit(True, "build", "terraform apply: exit 1")
    assert result.describe(3) == "last 3 creations failed: terraform apply: exit 1"


def test_hard_limit_without_error_text_still_says_something() -> None:
    row = replace(fail(1), error=None)
    result = hard_limit(preset_row(), [row], FailurePolicy(hard_limit=1))
    assert result.limited and result.last_error == "build failed"


def test_not_limited_describes_nothing() -> None:
    assert HardLimit(False).describe(3) == ""


# --- §5.1 slow start ----------------------------------------------------------------------------------------


def created_after_failure(minutes_ago: float, status: str = "running") -> PrebuildRow:
    return prebuild_row(status, minutes_ago * MIN)


@pytest.mark.parametrize(
    ("rows", "cap"),
    [
        pytest.param([], None, id="nothing built"),
        pytest.param([ok(1)], None, id="newest succeeded"),
        pytest.param([ok(1), fail(2)], None, id="a success after the failure ends slow start"),
        pytest.param([fail(10)], 1, id="after a failure: 1"),
        pytest.param([created_after_failure(5), fail(10)], 2, id="1 started since: 2"),
        pytest.param([created_after_failure(i) for i in (3, 4, 5)] + [fail(10)], 4, id="3 started since: 4"),
        pytest.param([infra(1)], None, id="infrastructure failures do not slow-start"),
    ],
)
def test_slow_start(rows: list[PrebuildRow], cap: int | None) -> None:
    assert slow_start_cap(preset_row(), rows) == cap


def test_slow_start_ends_with_a_retry() -> None:
    assert slow_start_cap(preset_row(failures_reset_at=NOW - MIN / 2), [fail(1)]) is None


# --- all of it through the snapshot and planner -------------------------------------------------------------


def plan_for(
    p: PresetRow, rows: list[PrebuildRow], policy: FailurePolicy = POLICY, now: datetime = NOW
) -> Any:
    grouped = group([p], rows)
    snap = preset_snapshot(grouped[p.preset_id], delete_retry=MIN, failure_inputs=failure_inputs(policy, now))
    return plan_preset(snap, now)


def test_config_errors_hard_limit_the_preset_after_three_attempts() -> None:
    # Acceptance §11.2: three failed records naming the parameter, then no further creates.
    p = preset_row(desired_instances=2)
    error = "parameter `repo` is required"
    rows = [fail(m, failure_class="config", took=timedelta(0), error=error) for m in (90, 150, 210)]
    plan = plan_for(p, rows)
    assert plan.state.failed == 3
    assert plan.create == 0 and plan.wanted_creates == 2
    assert plan.blocked == f"hard-limited: last 3 creations failed: {error}"
    assert plan.reason == "creating 2: desired 2, running 0"


def test_two_failures_back_off_but_do_not_hard_limit() -> None:
    p = preset_row(desired_instances=2)
    rows = [fail(1, took=timedelta(0)), fail(2, took=timedelta(0))]
    plan = plan_for(p, rows)
    assert plan.create == 0
    assert plan.blocked is not None and plan.blocked.startswith("backing off until 2026-03-02 12:01:00Z")
    later = plan_for(p, rows, now=NOW + MIN)
    assert later.create == 1  # slow start: one create after the failure
    assert later.blocked == "slow start after failures: 1 of 2 this cycle"


def test_retry_lets_creation_resume_at_once() -> None:
    rows = [fail(1), fail(2), fail(3)]
    assert plan_for(preset_row(desired_instances=2), rows).create == 0
    plan = plan_for(preset_row(desired_instances=2, failures_reset_at=NOW), rows)
    assert plan.create == 2 and plan.blocked is None
    assert plan.state.failed == 3  # the evidence stays


def test_failure_inputs_fields() -> None:
    inputs = failure_inputs(POLICY, NOW)(preset_row(), [fail(1), fail(2), fail(3)])
    assert inputs == {
        "backoff_until": NOW - MIN / 2 + 3 * MIN,
        "backoff_reason": "3 failed builds, last: exit status 1",
        "hard_limited": True,
        "hard_limit_reason": "last 3 creations failed: exit status 1",
        "create_cap": 1,
    }
    assert failure_inputs(POLICY, NOW)(preset_row(), []) == {
        "backoff_until": None,
        "backoff_reason": "",
        "hard_limited": False,
        "hard_limit_reason": "",
        "create_cap": None,
    }
