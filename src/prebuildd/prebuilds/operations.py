"""Operator actions on pools: status, pause/resume, pool settings, invalidate, retry, cleanup, explain.

Status and explain answer "why is my pool empty?" from the same snapshot reader and planner the reconciler uses,
so what they say is what the next cycle will do. Every action works in one organization (the caller's), and the
texts that embed build errors are redacted unless the caller may read outputs (``show_errors``). The collaborators are named (database, clock, builder, snapshot
reader, and the kick that makes the reconciler run now); nothing here knows the reconciler itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import structlog

from prebuildd.domain.autoscale import AutoscaleSettings, settings_problems
from prebuildd.domain.errors import BuildError, ErrorCode, PrebuilddError, not_found
from prebuildd.domain.expression import problem as expression_problem
from prebuildd.domain.failures import redact_errors
from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.domain.jobs import BuildReason, JobPriority, Transition
from prebuildd.domain.planner import plan_preset
from prebuildd.domain.pools import pool_problems
from prebuildd.domain.schedules import Schedule
from prebuildd.domain.status import derive_status
from prebuildd.identity.audit import AuditContext, Target, record
from prebuildd.prebuilds.snapshot import Snapshot, SnapshotReader
from prebuildd.runtime.clock import Clock
from prebuildd.store import prebuilds as store
from prebuildd.store import templates as templates_store
from prebuildd.store.db import Conn, Database
from prebuildd.store.prebuilds import (
    ActivePreset,
    ClaimBuildCounts,
    FailedPrebuild,
    HitCounts,
    PauseSetting,
    PresetEvent,
    PresetPool,
)
from prebuildd.workspaces.builder import BuildRequest, WorkspaceBuilder

log = structlog.get_logger(__name__)

Kick = Callable[[str], None]
"""Makes the reconciler run soon; the argument says why."""


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
    """What the next cycle does, then why ('create 2 at 12:03:00Z: desired 3, running 1')."""
    blocked: str | None
    backoff_until: datetime | None
    hard_limit_reason: str
    schedule_problem: str | None
    last_decision: str | None
    last_decision_at: datetime | None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """The failure behind a backoff or a hard limit, in full (it may span lines); None when nothing holds it."""
    target_source: str = "scheduled"
    """``scheduled`` | ``autoscale`` | ``autoscale_fallback`` | ``expression`` | ``expression_fallback``"""
    sizing: str = ""
    """Why the target: 'desired 7 (autoscale: 0.8 claims/min, ready mean 3m20s, p90 4m10s, target 95%)'."""
    recommended: int | None = None
    """The autoscale formula's size for this pool's demand (None: too little data), even with autoscale off."""
    recommendation: str = ""
    """'pool 2, recommended 5 for 95% hits' (empty: too little data)."""


def _hit_rate(counts: HitCounts | None) -> dict[str, Any]:
    c = counts or HitCounts()
    out: dict[str, Any] = {
        "claims_hour": c.claims_hour,
        "misses_hour": c.misses_hour,
        "claims_day": c.claims_day,
        "misses_day": c.misses_day,
    }
    for window in ("hour", "day"):
        total = out[f"claims_{window}"] + out[f"misses_{window}"]
        out[f"hit_rate_{window}"] = round(out[f"claims_{window}"] / total, 3) if total else None
    return out


class PrebuildOperations:
    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        builder: WorkspaceBuilder,
        reader: SnapshotReader,
        kick: Kick,
    ) -> None:
        self.db = db
        self.clock = clock
        self.builder = builder
        self.reader = reader
        self.kick = kick

    async def pool_status(
        self, organization_id: UUID, *, show_errors: bool
    ) -> tuple[bool, list[PresetStatus]]:
        """(paused, one status per preset with a pool of the organization) from a fresh snapshot and the
        planner; without ``show_errors``, the texts carry no build error."""
        snap = await self.reader.read()
        mine = [s for s in snap.snapshots if snap.presets[s.preset_id].organization_id == organization_id]
        plans = {s.preset_id: plan_preset(s, snap.taken_at, paused=snap.paused) for s in mine}
        now = self.clock.now()
        async with self.db.transaction() as conn:
            decisions = await store.last_decisions(conn, list(plans))
            hits = await store.hit_counts(
                conn, list(plans), now - timedelta(hours=1), now - timedelta(days=1)
            )
        statuses = []
        for s in mine:
            plan = plans[s.preset_id]
            derived = derive_status(s, plan, snap.taken_at, paused=snap.paused)
            decision = decisions.get(s.preset_id)
            st = plan.state
            statuses.append(
                PresetStatus(
                    preset_id=s.preset_id,
                    template=s.template_name,
                    preset=s.preset_name,
                    version=s.version_name,
                    active=s.active,
                    status=derived.status.value,
                    desired=st.desired,
                    running=st.running_valid,
                    eligible=st.eligible,
                    expired=st.expired,
                    starting=st.starting,
                    stopping=st.stopping,
                    deleting=st.deleting,
                    failed=st.failed,
                    next_action=derived.next_action,
                    blocked=derived.blocked,
                    backoff_until=derived.backoff_until,
                    hard_limit_reason=s.hard_limit_reason,
                    schedule_problem=st.schedule_problem,
                    last_decision=decision.message if decision else None,
                    last_decision_at=decision.created_at if decision else None,
                    extra={"hit_rate": _hit_rate(hits.get(s.preset_id))},
                    error=derived.error,
                    **_sizing(snap, s.preset_id, st.desired),
                )
            )
        if not show_errors:
            statuses = [_redacted(st, _known_errors(snap, st.preset_id)) for st in statuses]
        return snap.paused, statuses

    async def set_paused(
        self, paused: bool, user_id: UUID, *, audit: AuditContext | None = None
    ) -> PauseSetting:
        async with self.db.transaction() as conn:
            setting = await store.set_paused(conn, paused, self.clock.now(), user_id)
            # Site-wide: the entry names no organization.
            await record(conn, audit, "prebuilds.pause" if paused else "prebuilds.resume", Target("site"))
        log.info("prebuilds.paused" if paused else "prebuilds.resumed", user_id=str(user_id))
        self.kick("resume" if not paused else "pause")
        return setting

    async def active_presets(
        self, organization_id: UUID, template: str, preset: str | None = None
    ) -> list[ActivePreset]:
        """Presets of the organization's template's active version (one when ``preset`` is given); a not_found
        error when none."""
        async with self.db.transaction() as conn:
            rows = await _active_presets(conn, organization_id, template, preset)
        return rows

    async def invalidate(
        self,
        organization_id: UUID,
        template: str,
        preset: str | None = None,
        *,
        audit: AuditContext | None = None,
    ) -> list[str]:
        """Mark every prebuild of the presets as expired: the reconciler replaces them."""
        _about(audit, organization_id, template, preset)
        presets = await self.active_presets(organization_id, template, preset)
        async with self.db.transaction() as conn:
            await store.invalidate(conn, [p.id for p in presets], self.clock.now())
            await _record(conn, audit, "prebuilds.invalidate", organization_id, presets, preset)
        self.kick("invalidation")
        return [p.name for p in presets]

    async def set_pool(
        self,
        organization_id: UUID,
        template: str,
        preset: str,
        *,
        instances: int | None,
        ttl_seconds: int | None = None,
        timezone: str | None = None,
        schedules: list[Schedule] | None = None,
        autoscale: dict[str, Any] | None = None,
        clear_autoscale: bool = False,
        expression: str | None = None,
        clear_expression: bool = False,
        audit: AuditContext | None = None,
    ) -> PresetPool:
        """Change a preset's pool settings without a new version. ``None`` keeps a setting as it is; ``autoscale``
        changes the given keys of the autoscale settings (turning it on with defaults for the others)."""
        _about(audit, organization_id, template, preset)
        [target] = await self.active_presets(organization_id, template, preset)
        async with self.db.transaction() as conn:
            current = await store.preset_pool(conn, target.id)
            if current is None:
                raise not_found(f"preset {preset} of template {template}")
            new_instances = instances if instances is not None else current.desired_instances
            new_ttl = ttl_seconds if ttl_seconds is not None else current.ttl_seconds
            new_tz = timezone or current.timezone
            problems = pool_problems(
                instances=new_instances, ttl_seconds=new_ttl, timezone=new_tz, schedules=schedules or ()
            )
            if problems:
                raise PrebuilddError(ErrorCode.INVALID_PARAMETER, str(problems[0]))
            new_autoscale = None if clear_autoscale else current.autoscale
            if autoscale is not None:
                merged = {**(new_autoscale or AutoscaleSettings().as_dict()), **autoscale}
                settings = AutoscaleSettings.from_dict(merged)
                for key, reason in settings_problems(settings):
                    raise PrebuilddError(ErrorCode.INVALID_PARAMETER, f"autoscale.{key}: {reason}")
                new_autoscale = settings.as_dict()
            new_expression = None if clear_expression else current.target_expression
            if expression is not None:
                problem = expression_problem(expression)
                if problem is not None:
                    raise PrebuilddError(ErrorCode.INVALID_PARAMETER, f"expression: {problem}")
                new_expression = expression
            if new_autoscale is not None and new_expression is not None:
                raise PrebuilddError(
                    ErrorCode.INVALID_PARAMETER,
                    "expression: a pool has autoscale or an expression, not both (clear one)",
                )
            updated = await store.set_pool(
                conn,
                target.id,
                new_instances,
                new_ttl,
                new_tz,
                self.clock.now(),
                autoscale=new_autoscale,
                target_expression=new_expression,
            )
            if updated is None:
                raise not_found(f"preset {preset} of template {template}")
            if schedules is not None:
                await store.replace_schedules(conn, target.id, schedules)
            stored = await store.preset_schedules(conn, target.id)
            changed: dict[str, Any] = {
                "instances": instances,
                "ttl_seconds": ttl_seconds,
                "timezone": timezone,
                "schedules": None if schedules is None else [[s.cron, s.instances] for s in schedules],
                "autoscale": None if clear_autoscale else autoscale,
                "expression": None if clear_expression else expression,
            }
            detail = {key: value for key, value in changed.items() if value is not None}
            if clear_autoscale:
                detail["autoscale"] = None
            if clear_expression:
                detail["expression"] = None
            await _record(conn, audit, "preset.set", organization_id, [target], preset, detail=detail)
        self.kick("pool settings changed")
        return PresetPool(
            name=updated.name,
            desired_instances=updated.desired_instances,
            ttl_seconds=updated.ttl_seconds,
            timezone=updated.timezone,
            autoscale=updated.autoscale,
            target_expression=updated.target_expression,
            schedules=tuple(stored),
        )

    async def retry(
        self,
        organization_id: UUID,
        template: str,
        preset: str | None = None,
        *,
        audit: AuditContext | None = None,
    ) -> list[str]:
        """Forget earlier failures (they stay as evidence) and let creation resume now."""
        _about(audit, organization_id, template, preset)
        presets = await self.active_presets(organization_id, template, preset)
        ids = [p.id for p in presets]
        async with self.db.transaction() as conn:
            await store.reset_failures(conn, ids, self.clock.now())
            await store.clear_trackers(conn, ids)
            await _record(conn, audit, "prebuilds.retry", organization_id, presets, preset)
        self.kick("retry")
        log.info("prebuilds.retry", template=template, presets=[p.name for p in presets])
        return [p.name for p in presets]

    async def failed_prebuilds(
        self, organization_id: UUID, template: str | None, preset: str | None
    ) -> list[FailedPrebuild]:
        async with self.db.transaction() as conn:
            # A template named must be the organization's, as for invalidate and retry: 404 otherwise (an
            # empty list would not say whether the name was wrong, or another organization's).
            if (
                template is not None
                and await templates_store.live_template(conn, organization_id, template) is None
            ):
                raise not_found(f"template {template}")
            return await store.failed_prebuilds(conn, organization_id, template, preset)

    async def cleanup(
        self,
        organization_id: UUID,
        template: str | None,
        preset: str | None,
        *,
        dry_run: bool,
        audit: AuditContext | None = None,
    ) -> tuple[list[FailedPrebuild], list[str]]:
        """Delete the organization's failed prebuilds (orphan deletes when nothing was provisioned). Returns
        (prebuilds, errors). A dry run changes nothing and is not audited; a real one is one entry, whatever it
        found."""
        if template is not None:
            _about(audit, organization_id, template, preset)
        failed = await self.failed_prebuilds(organization_id, template, preset)
        if dry_run:
            return failed, []
        if not failed:
            async with self.db.transaction() as conn:
                await _record_cleanup(conn, audit, organization_id, template, preset, failed, [])
            return failed, []
        errors = []
        for prebuild in failed:
            req = BuildRequest(
                transition=Transition.DELETE,
                initiator_id=PREBUILDS_USER_ID,
                workspace_id=prebuild.workspace_id,
                reason=BuildReason.CLEANUP,
                priority=JobPriority.PREBUILD,
                expected_owner_id=PREBUILDS_USER_ID,
            )
            try:
                async with self.db.transaction() as conn:
                    await self.builder.build(conn, req)
            except BuildError as exc:
                errors.append(f"{prebuild.workspace_name}: {exc.message}")
        preset_ids = list({p.preset_id for p in failed if p.preset_id})
        async with self.db.transaction() as conn:
            await store.reset_failures(conn, preset_ids, self.clock.now())
            # The deletes were queued one transaction each (a refused one must not undo the others); the entry
            # is written with the last step and lists what was queued and what was refused.
            await _record_cleanup(conn, audit, organization_id, template, preset, failed, errors)
        self.kick("cleanup")
        return failed, errors

    async def explain(
        self, organization_id: UUID, template: str, preset: str, *, show_errors: bool, limit: int = 20
    ) -> tuple[PresetStatus, list[PresetEvent]]:
        """The preset's status now and its last decisions, newest first (without ``show_errors``: no error text)."""
        [target] = await self.active_presets(organization_id, template, preset)
        _, statuses = await self.pool_status(organization_id, show_errors=show_errors)
        status = next((s for s in statuses if s.preset_id == target.id), None)
        if status is None:
            raise PrebuilddError(
                ErrorCode.NOT_FOUND,
                f"preset {preset} of template {template} has no pool (no prebuild instances set)",
            )
        async with self.db.transaction() as conn:
            events = await store.preset_events(conn, [target.id], limit)
        if not show_errors:
            events = [dataclasses.replace(e, message=redact_errors(e.message)) for e in events]
        return status, events

    async def claim_builds(
        self, preset_id: UUID, *, show_errors: bool, window: timedelta = timedelta(days=1)
    ) -> ClaimBuildCounts:
        """The preset's claim builds over the last ``window``: how many ran, failed, and how long they took
        (the last error only with ``show_errors``)."""
        async with self.db.transaction() as conn:
            counts = await store.claim_build_counts(conn, preset_id, self.clock.now() - window)
        return counts if show_errors else dataclasses.replace(counts, last_error=None)


def _sizing(snap: Snapshot, preset_id: UUID, desired: int) -> dict[str, Any]:
    target = snap.targets.get(preset_id)
    if target is None:
        return {}
    source = target.snapshot.target_source
    reason = target.snapshot.target_reason
    # The rate the recommendation was computed at (domain.targets: the pool's autoscale settings, or 95%).
    rate = float((snap.presets[preset_id].autoscale or {}).get("target_hit_rate", 0.95))
    recommendation = ""
    if target.recommended is not None:
        recommendation = f"pool {desired}, recommended {target.recommended} for {rate:.0%} hits"
    return {
        "target_source": source,
        "sizing": f"desired {desired} ({reason})" if reason else f"desired {desired} ({source})",
        "recommended": target.recommended,
        "recommendation": recommendation,
    }


def _about(audit: AuditContext | None, organization_id: UUID, template: str, preset: str | None) -> None:
    if audit is not None:
        audit.about("template", template, organization_id=organization_id)
        if preset is not None:
            audit.about("preset", f"{template}/{preset}", organization_id=organization_id)


async def _record(
    conn: Conn,
    audit: AuditContext | None,
    action: str,
    org_id: UUID,
    presets: list[ActivePreset],
    preset: str | None,
    *,
    detail: dict[str, Any] | None = None,
) -> None:
    """An entry on one preset (``template/preset``) or on a whole template (every preset of its active version)."""
    if audit is None or not presets:
        return
    first = presets[0]
    presets_detail = {"presets": [p.name for p in presets], **(detail or {})}
    if preset is not None:
        target = Target("preset", f"{first.template_name}/{first.name}", first.id, org_id)
    else:
        target = Target("template", first.template_name, first.template_id, org_id)
    await record(conn, audit, action, target, detail=presets_detail)


async def _record_cleanup(
    conn: Conn,
    audit: AuditContext | None,
    org_id: UUID,
    template: str | None,
    preset: str | None,
    failed: list[FailedPrebuild],
    errors: list[str],
) -> None:
    if audit is None:
        return
    name = template if preset is None else f"{template}/{preset}"
    target = Target("template" if preset is None else "preset", name or "", None, org_id)
    detail = {"workspaces": [p.workspace_name for p in failed], "errors": errors}
    await record(conn, audit, "prebuilds.cleanup", target, detail=detail)


def _known_errors(snap: Snapshot, preset_id: UUID) -> list[str]:
    """The build errors the snapshot holds for the preset: the texts a member's status must not show."""
    errors = [r.error for r in snap.history_by_preset.get(preset_id, []) if r.error]
    errors += [r.error for r in snap.prebuilds if r.preset_id == preset_id and r.error]
    last = snap.presets[preset_id].last_error
    return [*errors, last] if last else errors


def _redacted(status: PresetStatus, errors: list[str]) -> PresetStatus:
    def hide(text: str | None) -> str | None:
        return None if text is None else redact_errors(text, errors)

    return dataclasses.replace(
        status,
        blocked=hide(status.blocked),
        hard_limit_reason=redact_errors(status.hard_limit_reason, errors),
        last_decision=hide(status.last_decision),
        next_action=redact_errors(status.next_action, errors),
        error=hide(status.error),
    )


async def _active_presets(conn: Conn, org_id: UUID, template: str, preset: str | None) -> list[ActivePreset]:
    presets = await store.presets_of_active_version(conn, org_id, template, preset)
    if not presets:
        what = f"preset {preset} of template {template}" if preset else f"template {template}"
        raise PrebuilddError(ErrorCode.NOT_FOUND, f"{what} not found (or the template has no active version)")
    return presets
