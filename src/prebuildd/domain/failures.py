"""Failure maths of SPEC §6: database-derived backoff, the transient backoff, and the hard limit.

All of it is computed from what PostgreSQL holds (the latest build of each prebuild and the preset's transient
failure record), so every replica and every restart reaches the same answer.

A job whose daemon was lost (``daemon_lost``: failed as stale, or its daemon restarted) is nobody's fault: it
does not count towards the build backoff or the hard limit and does not back the preset off, so the pool
refills at once. Only ``LOST_DAEMON_STREAK`` of them in a row on one preset (no success or other failure in
between, within the lookback, each re-creation lost again) back off, with the transient maths, since then the
template may be what kills its daemons. Jobs lost together (one replica killed while running three of the
preset's creations) are one loss, not three: that is the replica's fault, not a streak.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prebuildd.domain.snapshot import PrebuildRow, PresetRow
from prebuildd.domain.words import plural

LOST_DAEMON_STREAK = 3
"""Lost-daemon failures in a row (each creation made after the previous loss) that back a preset off; fewer
refill the pool at once."""

_NOT_THE_TEMPLATES = ("infrastructure", "daemon_lost")
"""Failure classes that say nothing about the template: never build failures, never towards the hard limit."""


@dataclass(frozen=True)
class FailurePolicy:
    backoff_interval: timedelta = timedelta(minutes=1)
    backoff_lookback: timedelta = timedelta(hours=1)
    max_backoff: timedelta = timedelta(hours=1)
    hard_limit: int = 3
    """0 disables the hard limit."""


@dataclass(frozen=True)
class Backoff:
    until: datetime
    failures: int
    reason: str


def _creations(preset: PresetRow, rows: Sequence[PrebuildRow]) -> list[PrebuildRow]:
    """Finished creations of this preset that still count: start builds on the preset's version, newest first,
    after the last retry or cleanup, excluding infrastructure and lost-daemon failures (nothing the template
    did)."""
    found = [
        r
        for r in rows
        if r.transition == "start"
        and r.version_id == preset.version_id
        and r.job_status in ("succeeded", "failed")
        and r.failure_class not in _NOT_THE_TEMPLATES
        and (preset.failures_reset_at is None or r.build_created_at > preset.failures_reset_at)
    ]
    return sorted(found, key=lambda r: r.build_created_at, reverse=True)


def build_backoff(
    preset: PresetRow, rows: Sequence[PrebuildRow], now: datetime, policy: FailurePolicy
) -> Backoff | None:
    """§6.1: when one of the newest `desired` creations failed within the lookback, the next create waits
    ``num_failed * interval`` from the newest failure's completion (not its creation), where ``num_failed``
    counts every failed creation within the lookback (as the reference does), so waits grow with each failure
    even for a pool of one."""
    creations = _creations(preset, rows)
    since = now - policy.backoff_lookback
    newest = creations[: max(preset.desired_instances or 0, 1)]
    if not any(r.job_status == "failed" and r.build_created_at >= since for r in newest):
        return None
    recent = [r for r in creations if r.job_status == "failed" and r.build_created_at >= since]
    last = max(r.job_completed_at or r.build_created_at for r in recent)
    until = last + len(recent) * policy.backoff_interval
    latest_error = max(recent, key=lambda r: r.job_completed_at or r.build_created_at).error or "build failed"
    return Backoff(until, len(recent), f"{plural(len(recent), 'failed build')}, last: {latest_error}")


def transient_backoff(
    preset: PresetRow, rows: Sequence[PrebuildRow], now: datetime, policy: FailurePolicy
) -> Backoff | None:
    """§6.2: refused creations recorded on the preset, plus infrastructure failures of its builds, back off
    linearly in the number of consecutive failures, capped by ``max_backoff``. Lost-daemon failures back off
    the same way, but only from ``LOST_DAEMON_STREAK`` in a row."""
    candidates: list[Backoff] = []
    reset = preset.failures_reset_at
    if (
        preset.consecutive_failures
        and preset.last_failure_at is not None
        and (reset is None or preset.last_failure_at > reset)
    ):
        wait = min(policy.backoff_interval * preset.consecutive_failures, policy.max_backoff)
        reason = f"{plural(preset.consecutive_failures, 'transient failure')}, last: {preset.last_error or 'unknown'}"
        candidates.append(Backoff(preset.last_failure_at + wait, preset.consecutive_failures, reason))
    starts = [r for r in rows if r.transition == "start" and (reset is None or r.build_created_at > reset)]
    # Consecutive: a successful creation ends the series, as it clears the persisted record.
    last_success = max((r.build_created_at for r in starts if r.job_status == "succeeded"), default=None)
    since_success = [
        r
        for r in starts
        if r.job_status == "failed"
        and r.build_created_at >= now - policy.backoff_lookback
        and (last_success is None or r.build_created_at > last_success)
    ]
    infra = _by_completion(r for r in since_success if r.failure_class == "infrastructure")
    if infra:
        candidates.append(
            _transient(len(infra), infra[-1], policy, plural(len(infra), "infrastructure failure"))
        )
    lost = _lost_daemon_streak(since_success)
    if lost and lost[0] >= LOST_DAEMON_STREAK:
        count, last = lost
        candidates.append(_transient(count, last, policy, f"{count} lost-daemon failures in a row"))
    return max(candidates, key=lambda b: b.until, default=None)


def _by_completion(rows: Iterable[PrebuildRow]) -> list[PrebuildRow]:
    return sorted(rows, key=lambda r: r.job_completed_at or r.build_created_at)


def _lost_daemon_streak(failed: Sequence[PrebuildRow]) -> tuple[int, PrebuildRow] | None:
    """The newest run of consecutive lost-daemon failures among ``failed``: how many times in a row a creation
    was lost, and the newest loss. Another failure class ends the run, as a success does. Losses that overlapped
    (a creation made before the previous loss was failed, such as the jobs of one replica that died at once)
    count once: the streak counts re-creations that were lost again, not daemons lost together."""
    run: list[PrebuildRow] = []
    for r in reversed(_by_completion(failed)):
        if r.failure_class != "daemon_lost":
            break
        run.append(r)
    if not run:
        return None
    count, previous_loss = 0, None
    for r in reversed(run):  # oldest first
        if previous_loss is None or r.build_created_at > previous_loss:
            count += 1
            previous_loss = r.job_completed_at or r.build_created_at
    return count, run[0]


def _transient(count: int, last: PrebuildRow, policy: FailurePolicy, what: str) -> Backoff:
    """The transient backoff after ``count`` failures: ``count * interval`` from the newest one, capped."""
    wait = min(policy.backoff_interval * count, policy.max_backoff)
    reason = f"{what}, last: {last.error or 'unknown'}"
    return Backoff((last.job_completed_at or last.build_created_at) + wait, count, reason)


@dataclass(frozen=True)
class HardLimit:
    limited: bool
    reason_class: str | None = None
    """'config' when the last failure was a refused build, 'build' otherwise."""
    last_error: str = ""

    def describe(self, limit: int) -> str:
        return f"last {plural(limit, 'creation')} failed: {self.last_error}" if self.limited else ""


def hard_limit(preset: PresetRow, rows: Sequence[PrebuildRow], policy: FailurePolicy) -> HardLimit:
    """§6.3: the last ``hard_limit`` creations all failed (no time window)."""
    if policy.hard_limit <= 0:
        return HardLimit(False)
    last = _creations(preset, rows)[: policy.hard_limit]
    if len(last) < policy.hard_limit or any(r.job_status != "failed" for r in last):
        return HardLimit(False)
    newest = last[0]
    reason_class = "config" if newest.failure_class == "config" else "build"
    return HardLimit(True, reason_class, newest.error or "build failed")


def slow_start_cap(preset: PresetRow, rows: Sequence[PrebuildRow]) -> int | None:
    """§5.1: after a failed creation, 1, 2, 4, … creates per cycle until one succeeds.

    Derived from the database: the cap is one more than the creations started since the newest failure, so each
    cycle may double what is in flight (0 → 1, 1 → 2, 3 → 4, 7 → 8) until a success ends the slow start.
    """
    finished = _creations(preset, rows)
    if not finished or finished[0].job_status != "failed":
        return None
    failed_at = finished[0].job_completed_at or finished[0].build_created_at
    started_since = sum(
        1
        for r in rows
        if r.transition == "start" and r.version_id == preset.version_id and r.build_created_at > failed_at
    )
    return started_since + 1


_NO_FAILURES: dict[str, Any] = {
    "backoff_until": None,
    "backoff_reason": "",
    "hard_limited": False,
    "hard_limit_reason": "",
    "create_cap": None,
}


def failure_inputs(policy: FailurePolicy, now: datetime) -> Any:
    """The FailureInputs callback for ``snapshot.preset_snapshot``."""

    def inputs(preset: PresetRow, rows: list[PrebuildRow]) -> dict[str, Any]:
        if not preset.consecutive_failures and all(r.job_status != "failed" for r in rows):
            return dict(_NO_FAILURES)  # nothing failed: the common case, kept cheap
        limit = hard_limit(preset, rows, policy)
        backoffs = [
            b
            for b in (build_backoff(preset, rows, now, policy), transient_backoff(preset, rows, now, policy))
            if b is not None
        ]
        backoff = max(backoffs, key=lambda b: b.until, default=None)
        return {
            "backoff_until": backoff.until if backoff else None,
            "backoff_reason": backoff.reason if backoff else "",
            "hard_limited": limit.limited,
            "hard_limit_reason": limit.describe(policy.hard_limit),
            "create_cap": slow_start_cap(preset, rows),
        }

    return inputs


ERROR_HIDDEN = "(error text hidden: template-admins and owners see it)"
_EMBEDDED_ERROR = re.compile(r"(creations failed: |, last: )(.*)", re.DOTALL)


def redact_errors(text: str, errors: Iterable[str] = ()) -> str:
    """``text`` without the build error text it embeds, for members, who see statuses and counts only.

    Build errors are script output and can hold secrets. They reach the texts members read (hard-limit and
    backoff reasons, decisions, events) only where this module and the planner put them: after
    ``creations failed: `` and after ``, last: `` (up to the closing parenthesis), always at the end. ``errors``
    are known error texts, removed wherever else they appear.
    """
    for error in errors:
        if error:
            text = text.replace(error, ERROR_HIDDEN)

    def hide(match: re.Match[str]) -> str:
        closing = ")" if match.group(1) == ", last: " and match.group(2).endswith(")") else ""
        return f"{match.group(1)}{ERROR_HIDDEN}{closing}"

    return _EMBEDDED_ERROR.sub(hide, text, count=1)
