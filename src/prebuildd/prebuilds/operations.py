"""Operator actions on pools: status, pause/resume, pool settings, invalidate, retry, cleanup, explain.

Status and explain answer "why is my pool empty?" from the same snapshot and planner the reconciler uses, so
what they say is what the next cycle will do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

from prebuildd.domain.errors import BuildError, ErrorCode, PrebuilddError
from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.domain.jobs import BuildReason, JobPriority, Transition
from prebuildd.domain.planner import Plan, plan_preset
from prebuildd.domain.schedules import Schedule, cron_problem
from prebuildd.prebuilds.loop import Reconciler
from prebuildd.services import Services
from prebuildd.store.db import Row, execute, fetch_all, fetch_one
from prebuildd.workspaces.builder import BuildRequest

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PresetStatus:
    preset_id: UUID
    template: str
    preset: str
    version: str
    active: bool
    status: str
    """healthy | hard_limited | backing_off | paused | inactive"""
    desired: int
    running: int
    eligible: int
    expired: int
    starting: int
    stopping: int
    deleting: int
    failed: int
    next_action: str
    blocked: str | None
    backoff_until: datetime | None
    hard_limit_reason: str
    schedule_problem: str | None
    last_decision: str | None
    last_decision_at: datetime | None
    extra: dict[str, Any] = field(default_factory=dict)


def _reconciler(services: Services) -> Reconciler:
    return services.reconciler or Reconciler(services)


async def pool_status(services: Services) -> tuple[bool, list[PresetStatus]]:
    """(paused, one status per preset with a pool) from a fresh snapshot and the planner."""
    snap = await _reconciler(services).snapshot()
    plans = {s.preset_id: plan_preset(s, snap.taken_at, paused=snap.paused) for s in snap.snapshots}
    now = services.clock.now()
    async with services.db.transaction() as conn:
        decisions = {
            row["preset_id"]: row
            for row in await fetch_all(conn, "prebuilds.last_decisions", {"preset_ids": list(plans)})
        }
        hits = {
            row.pop("preset_id"): row
            for row in await fetch_all(
                conn,
                "claims.hit_rates",
                {
                    "preset_ids": list(plans),
                    "hour_ago": now - timedelta(hours=1),
                    "day_ago": now - timedelta(days=1),
                },
            )
        }
    statuses = []
    for s in snap.snapshots:
        plan: Plan = plans[s.preset_id]
        backing_off = s.backoff_until is not None and snap.taken_at < s.backoff_until
        if snap.paused:
            status = "paused"
        elif not s.active:
            status = "inactive"
        elif s.hard_limited:
            status = "hard_limited"
        elif backing_off:
            status = "backing_off"
        else:
            status = "healthy"
        decision = decisions.get(s.preset_id)
        st = plan.state
        statuses.append(
            PresetStatus(
                preset_id=s.preset_id,
                template=s.template_name,
                preset=s.preset_name,
                version=s.version_name,
                active=s.active,
                status=status,
                desired=st.desired,
                running=st.running_valid,
                eligible=st.eligible,
                expired=st.expired,
                starting=st.starting,
                stopping=st.stopping,
                deleting=st.deleting,
                failed=st.failed,
                next_action=plan.reason,
                blocked=plan.blocked,
                backoff_until=s.backoff_until if backing_off else None,
                hard_limit_reason=s.hard_limit_reason,
                schedule_problem=st.schedule_problem,
                last_decision=decision["message"] if decision else None,
                last_decision_at=decision["created_at"] if decision else None,
                extra={"hit_rate": _hit_rate(hits.get(s.preset_id))},
            )
        )
    return snap.paused, statuses


def _hit_rate(row: Row | None) -> dict[str, Any]:
    counts: dict[str, Any] = {
        k: int(row[k]) if row else 0 for k in ("claims_hour", "misses_hour", "claims_day", "misses_day")
    }
    for window in ("hour", "day"):
        total = counts[f"claims_{window}"] + counts[f"misses_{window}"]
        counts[f"hit_rate_{window}"] = round(counts[f"claims_{window}"] / total, 3) if total else None
    return counts


async def set_paused(services: Services, paused: bool, user_id: UUID) -> Row:
    async with services.db.transaction() as conn:
        row = await fetch_one(
            conn, "prebuilds.set_paused", {"paused": paused, "now": services.clock.now(), "user_id": user_id}
        )
    assert row is not None
    log.info("prebuilds.paused" if paused else "prebuilds.resumed", user_id=str(user_id))
    services.kick("resume" if not paused else "pause")
    return row


async def active_presets(services: Services, template: str, preset: str | None = None) -> list[Row]:
    """Presets of the template's active version (one when ``preset`` is given); a not_found error when none."""
    async with services.db.transaction() as conn:
        org = await fetch_one(conn, "identity.default_organization")
        assert org is not None
        rows = await fetch_all(
            conn,
            "prebuilds.presets_of_active_version",
            {"organization_id": org["id"], "template": template, "preset": preset},
        )
    if not rows:
        what = f"preset {preset} of template {template}" if preset else f"template {template}"
        raise PrebuilddError(ErrorCode.NOT_FOUND, f"{what} not found (or the template has no active version)")
    return rows


async def invalidate(services: Services, template: str, preset: str | None = None) -> list[str]:
    """Mark every prebuild of the presets as expired: the reconciler replaces them."""
    rows = await active_presets(services, template, preset)
    async with services.db.transaction() as conn:
        await execute(
            conn, "prebuilds.invalidate", {"preset_ids": [r["id"] for r in rows], "now": services.clock.now()}
        )
    services.kick("invalidation")
    return [r["name"] for r in rows]


async def set_pool(
    services: Services,
    template: str,
    preset: str,
    *,
    instances: int | None,
    ttl_seconds: int | None = None,
    timezone: str | None = None,
    schedules: list[Schedule] | None = None,
) -> Row:
    """Change a preset's pool settings without a new version. ``None`` keeps a setting as it is."""
    [row] = await active_presets(services, template, preset)
    async with services.db.transaction() as conn:
        current = await fetch_one(conn, "templates.preset_by_id", {"id": row["id"]})
        assert current is not None
        new_instances = instances if instances is not None else current["desired_instances"]
        new_ttl = ttl_seconds if ttl_seconds is not None else current["ttl_seconds"]
        new_tz = timezone or current["scheduling_timezone"]
        _check_pool(new_instances, new_ttl, new_tz, schedules)
        updated = await fetch_one(
            conn,
            "prebuilds.set_pool",
            {
                "preset_id": row["id"],
                "desired_instances": new_instances,
                "ttl_seconds": new_ttl,
                "timezone": new_tz,
                "now": services.clock.now(),
            },
        )
        if schedules is not None:
            await execute(conn, "prebuilds.delete_schedules", {"preset_id": row["id"]})
            for position, schedule in enumerate(schedules):
                await execute(
                    conn,
                    "templates.insert_preset_schedule",
                    {
                        "preset_id": row["id"],
                        "position": position,
                        "cron": schedule.cron,
                        "desired_instances": schedule.instances,
                    },
                )
        stored = await fetch_all(conn, "prebuilds.preset_schedules", {"preset_id": row["id"]})
    assert updated is not None
    updated["schedules"] = stored
    services.kick("pool settings changed")
    return updated


def _check_pool(instances: int | None, ttl: int, timezone: str, schedules: list[Schedule] | None) -> None:
    if instances is not None and instances < 0:
        raise PrebuilddError(ErrorCode.INVALID_PARAMETER, "instances must be 0 or more")
    if ttl < 0:
        raise PrebuilddError(ErrorCode.INVALID_PARAMETER, "ttl must be 0 (none) or more")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise PrebuilddError(
            ErrorCode.INVALID_PARAMETER,
            f"unknown timezone {timezone!r}: use an IANA name such as Europe/Paris",
        ) from None
    for schedule in schedules or ():
        problem = cron_problem(schedule.cron)
        if problem:
            raise PrebuilddError(ErrorCode.INVALID_PARAMETER, problem)
        if schedule.instances < 0:
            raise PrebuilddError(
                ErrorCode.INVALID_PARAMETER, f"schedule {schedule.cron!r}: instances must be 0 or more"
            )


async def retry(services: Services, template: str, preset: str | None = None) -> list[str]:
    """Forget earlier failures (they stay as evidence) and let creation resume now."""
    rows = await active_presets(services, template, preset)
    ids = [r["id"] for r in rows]
    async with services.db.transaction() as conn:
        await execute(conn, "prebuilds.reset_failures", {"preset_ids": ids, "now": services.clock.now()})
        await execute(conn, "prebuilds.clear_trackers", {"preset_ids": ids})
    services.kick("retry")
    log.info("prebuilds.retry", template=template, presets=[r["name"] for r in rows])
    return [r["name"] for r in rows]


async def failed_prebuilds(services: Services, template: str | None, preset: str | None) -> list[Row]:
    async with services.db.transaction() as conn:
        org = await fetch_one(conn, "identity.default_organization")
        assert org is not None
        return await fetch_all(
            conn,
            "prebuilds.failed_prebuilds",
            {
                "prebuilds_user_id": PREBUILDS_USER_ID,
                "organization_id": org["id"],
                "template": template,
                "preset": preset,
            },
        )


async def cleanup(
    services: Services, template: str | None, preset: str | None, *, dry_run: bool
) -> tuple[list[Row], list[str]]:
    """Delete failed prebuilds (orphan deletes when nothing was provisioned). Returns (rows, errors)."""
    rows = await failed_prebuilds(services, template, preset)
    if dry_run or not rows:
        return rows, []
    errors = []
    for row in rows:
        req = BuildRequest(
            transition=Transition.DELETE,
            initiator_id=PREBUILDS_USER_ID,
            workspace_id=row["workspace_id"],
            reason=BuildReason.CLEANUP,
            priority=JobPriority.PREBUILD,
            expected_owner_id=PREBUILDS_USER_ID,
        )
        try:
            async with services.db.transaction() as conn:
                await services.builder.build(conn, req)
        except BuildError as exc:
            errors.append(f"{row['workspace_name']}: {exc.message}")
    preset_ids = list({r["preset_id"] for r in rows if r["preset_id"]})
    async with services.db.transaction() as conn:
        await execute(
            conn, "prebuilds.reset_failures", {"preset_ids": preset_ids, "now": services.clock.now()}
        )
    services.kick("cleanup")
    return rows, errors


async def explain(
    services: Services, template: str, preset: str, limit: int = 20
) -> tuple[PresetStatus, list[Row]]:
    """The preset's status now and its last decisions, newest first."""
    [row] = await active_presets(services, template, preset)
    _, statuses = await pool_status(services)
    status = next((s for s in statuses if s.preset_id == row["id"]), None)
    if status is None:
        raise PrebuilddError(
            ErrorCode.NOT_FOUND,
            f"preset {preset} of template {template} has no pool (no prebuild instances set)",
        )
    async with services.db.transaction() as conn:
        events = await fetch_all(conn, "prebuilds.preset_events", {"preset_ids": [row["id"]], "limit": limit})
    return status, events
