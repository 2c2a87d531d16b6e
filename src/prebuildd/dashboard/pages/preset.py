"""The Preset page: one pool in depth. Its status and the timeline of the reconciler's decisions and events with
their reasons (what ``prebuilds explain`` shows, from the same service call), the failed prebuilds each with its
build log inline (template admins and owners; a member sees that they failed, without error text or log),
histograms of claim latency and time to ready, the pool's schedule over a week, and its settings with the form
that changes them (``presets set``). The status and timeline refresh every 2 s."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from prebuildd.api.context import Services
from prebuildd.api.routes.prebuilds import prebuild_operations
from prebuildd.dashboard import charts
from prebuildd.dashboard.pagekit import PageUser, ServicesDep, render
from prebuildd.dashboard.pages.pools import hit_rate, status_word
from prebuildd.dashboard.views.redact import mask_secrets
from prebuildd.domain.permissions import Action
from prebuildd.domain.schedules import desired_at
from prebuildd.identity import users
from prebuildd.identity.users import User, may
from prebuildd.prebuilds.history import pool_history, preset_latencies
from prebuildd.prebuilds.operations import PresetStatus
from prebuildd.store import prebuilds as prebuilds_store
from prebuildd.store.jobs import JobLogLine
from prebuildd.store.prebuilds import FailedPrebuild, PresetEvent, PresetPool
from prebuildd.workspaces.reads import build_log_lines

router = APIRouter()

TIMELINE = 30
FAILED_SHOWN = 5
LOG_LINES = 200
_MONDAY = datetime(2024, 1, 1, tzinfo=UTC)  # any Monday: the grid is in the pool's own local time


@dataclass(frozen=True)
class FailedWithLog:
    failed: FailedPrebuild
    log: list[JobLogLine]


def week_slots(pool: PresetPool) -> tuple[list[tuple[int, int, int, int]], int]:
    """The pool's schedules as (weekday, start hour, end hour, instances) slots of a week in its local time, and
    the default count: each hour asks the same function the planner asks."""
    default = pool.desired_instances or 0
    slots: list[tuple[int, int, int, int]] = []
    if not pool.schedules:
        return slots, default
    for hour in range(7 * 24):
        at = _MONDAY + timedelta(hours=hour)
        count = desired_at(at, "UTC", pool.schedules, default).instances
        if count != default:
            slots.append((hour // 24, hour % 24, hour % 24 + 1, count))
    return slots, default


async def _status_and_timeline(
    services: Services, member: User, template: str, preset: str
) -> tuple[PresetStatus, list[PresetEvent]]:
    assert member.organization_id is not None
    return await prebuild_operations(services).explain(
        member.organization_id,
        template,
        preset,
        show_errors=may(member, Action.OUTPUTS_READ),
        limit=TIMELINE,
    )


async def _failed(services: Services, member: User, template: str, preset: str) -> list[FailedWithLog]:
    """The pool's failed prebuilds, newest first; errors and logs only for who may read outputs."""
    assert member.organization_id is not None
    failed, _ = await prebuild_operations(services).cleanup(
        member.organization_id, template, preset, dry_run=True
    )
    failed = sorted(failed, key=lambda f: f.build_created_at, reverse=True)[:FAILED_SHOWN]
    if not may(member, Action.OUTPUTS_READ):
        return [FailedWithLog(dataclasses.replace(f, error=None), []) for f in failed]
    shown = []
    for f in failed:
        lines = await build_log_lines(services.db, f.job_id, after=0, limit=LOG_LINES)
        masked = [dataclasses.replace(line, output=mask_secrets(line.output)) for line in lines]
        error = mask_secrets(f.error) if f.error else None
        shown.append(FailedWithLog(dataclasses.replace(f, error=error), masked))
    return shown


async def _context(
    services: Services, user: User, org: str, template: str, preset: str, *, full: bool
) -> dict[str, Any]:
    member = await users.acting_user(services.db, user, org)
    users.require(member, Action.PREBUILDS_READ)
    status, events = await _status_and_timeline(services, member, template, preset)
    context: dict[str, Any] = {
        "org": org,
        "member": member,
        "organization_id": member.organization_id,
        "template": template,
        "preset": preset,
        "p": status,
        "events": events,
        "status_word": status_word,
        "hit_rate": hit_rate,
        "show_errors": may(member, Action.OUTPUTS_READ),
        "may_operate": may(member, Action.PREBUILDS_OPERATE),
        "may_edit": may(member, Action.TEMPLATE_WRITE),
    }
    if not full:
        return context
    organization_ids = [member.organization_id] if member.organization_id else None
    history = await pool_history(
        services.db, [status.preset_id], clock=services.clock, organization_ids=organization_ids
    )
    latencies = await preset_latencies(
        services.db, status.preset_id, clock=services.clock, organization_ids=organization_ids
    )
    async with services.db.transaction(readonly=True) as conn:
        pool = await prebuilds_store.preset_pool(conn, status.preset_id)
        if pool is not None:
            schedules = await prebuilds_store.preset_schedules(conn, status.preset_id)
            pool = dataclasses.replace(pool, schedules=tuple(schedules))
    slots, default = week_slots(pool) if pool else ([], status.desired)
    name = f"{template}/{preset}"
    context |= {
        "pool": pool,
        "failed": await _failed(services, member, template, preset),
        "sparkline": charts.sparkline(
            [(s.at, s.eligible) for s in history.get(status.preset_id, [])],
            width=360,
            height=60,
            label=f"ready prebuilds of {name}, last 24 h",
        ),
        "claim_histogram": charts.histogram(
            latencies.claim_ms, unit="ms", label=f"claim latency of {name}, last 24 h"
        ),
        "ready_histogram": charts.histogram(
            latencies.ready_s, unit="s", label=f"time to ready of {name}'s prebuilds, last 24 h"
        ),
        "claims": len(latencies.claim_ms),
        "readies": len(latencies.ready_s),
        "week": charts.week_schedule(
            slots,
            default=default,
            label=f"instances of {name} over a week ({pool.timezone if pool else 'UTC'})",
        ),
    }
    return context


@router.get("/orgs/{org}/pools/{template}/{preset}", response_class=HTMLResponse, name="preset_page")
async def preset_page(
    request: Request, org: str, template: str, preset: str, services: ServicesDep, user: PageUser
) -> HTMLResponse:
    context = await _context(services, user, org, template, preset, full=True)
    return render(request, "preset.html", context, user=user)


@router.get("/orgs/{org}/pools/{template}/{preset}/body", response_class=HTMLResponse, name="preset_fragment")
async def preset_fragment(
    request: Request, org: str, template: str, preset: str, services: ServicesDep, user: PageUser
) -> HTMLResponse:
    context = await _context(services, user, org, template, preset, full=False)
    return render(request, "preset_body.html", context, user=user, headers={"Cache-Control": "no-store"})
