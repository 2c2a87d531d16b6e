"""The Pools page: every preset with a pool in each of the user's organizations, with the counts, status, hit
rate, recommended size and next action that ``prebuilds status`` shows (the same service call), and a 24 h
sparkline of ready prebuilds. The table is a fragment the page polls every 2 s (not while focus is inside it, so
a keyboard user's place is kept)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from prebuildd.api.context import Services
from prebuildd.api.routes.prebuilds import prebuild_operations
from prebuildd.dashboard import charts
from prebuildd.dashboard.pagekit import PageUser, ServicesDep, render
from prebuildd.dashboard.session import PageSession
from prebuildd.domain.permissions import Action
from prebuildd.identity import users
from prebuildd.identity.users import Organization, User, may
from prebuildd.prebuilds.history import pool_history
from prebuildd.prebuilds.operations import PresetStatus
from prebuildd.store import identity as identity_store

router = APIRouter()

STATUS_WORDS: dict[str, tuple[str, str, str]] = {
    # status: (word, mark, css class) — the word and the mark carry it, the colour only repeats them
    "healthy": ("healthy", "✓", "status-ok"),
    "backing_off": ("backoff", "…", "status-warn"),
    "hard_limited": ("limited", "✗", "status-bad"),
    "paused": ("paused", "‖", "status-off"),
    "inactive": ("inactive", "–", "status-off"),
}


def status_word(status: str) -> tuple[str, str, str]:
    return STATUS_WORDS.get(status, (status, "?", "status-off"))


def hit_rate(status: PresetStatus) -> dict[str, Any]:
    rates: dict[str, Any] = status.extra.get("hit_rate", {})
    return rates


@dataclass(frozen=True)
class OrgPools:
    """One organization's pools as the user sees them there (their role decides the error text and actions)."""

    organization: Organization
    user: User
    presets: list[PresetStatus]
    history: dict[UUID, str] = field(default_factory=dict)
    """Each preset's sparkline SVG."""

    @property
    def may_operate(self) -> bool:
        return may(self.user, Action.PREBUILDS_OPERATE)

    @property
    def may_edit(self) -> bool:
        return may(self.user, Action.TEMPLATE_WRITE)


async def organizations_shown(services: Services, request: Request, user: User) -> list[Organization]:
    """The user's organizations, and the one the session acts in (a site owner's may be none of theirs)."""
    page: PageSession = request.state.dashboard
    found = {m.organization.id: m.organization for m in page.organizations}
    if user.organization_id is not None and user.organization_id not in found:
        async with services.db.transaction(readonly=True) as conn:
            org = await identity_store.organization_by_name(conn, str(user.organization_id))
        if org is not None:
            found[org.id] = org
    return sorted(found.values(), key=lambda o: o.name)


async def as_member_of(services: Services, user: User, organization_id: UUID) -> User:
    return await users.acting_user(services.db, user, str(organization_id))


async def pools_view(services: Services, request: Request, user: User) -> tuple[bool, list[OrgPools]]:
    ops = prebuild_operations(services)
    paused = False
    shown: list[OrgPools] = []
    for org in await organizations_shown(services, request, user):
        member = await as_member_of(services, user, org.id)
        if not may(member, Action.PREBUILDS_READ):
            continue
        paused, presets = await ops.pool_status(org.id, show_errors=may(member, Action.OUTPUTS_READ))
        samples = await pool_history(
            services.db, [p.preset_id for p in presets], clock=services.clock, organization_ids=[org.id]
        )
        lines = {
            p.preset_id: charts.sparkline(
                [(s.at, s.eligible) for s in samples.get(p.preset_id, [])],
                label=f"ready prebuilds of {p.template}/{p.preset}, last 24 h",
            )
            for p in presets
        }
        shown.append(OrgPools(org, member, presets, lines))
    return paused, shown


async def _context(services: Services, request: Request, user: User) -> dict[str, object]:
    paused, orgs = await pools_view(services, request, user)
    return {
        "paused": paused,
        "orgs": orgs,
        "status_word": status_word,
        "hit_rate": hit_rate,
        "may_pause": may(user, Action.RECONCILIATION_PAUSE),
    }


@router.get("/pools", response_class=HTMLResponse, name="pools_page")
async def pools_page(request: Request, services: ServicesDep, user: PageUser) -> HTMLResponse:
    return render(request, "pools.html", await _context(services, request, user), user=user)


@router.get("/pools/body", response_class=HTMLResponse, name="pools_fragment")
async def pools_fragment(request: Request, services: ServicesDep, user: PageUser) -> HTMLResponse:
    return render(
        request,
        "pools_body.html",
        await _context(services, request, user),
        user=user,
        headers={"Cache-Control": "no-store"},
    )
