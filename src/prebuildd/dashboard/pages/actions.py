"""The dashboard's actions on pools: pause and resume reconciliation, retry, invalidate, clean up (a dry-run list
first, then a confirmed delete) and the pool settings of a preset. Each is a POST with the session's CSRF token,
checked for the role the API's route needs (``domain.permissions``), and done by the same service call as the
API, with the same audit entry (the ``audited`` mark: a refusal is recorded like the API's).

A form names the organization it acts in (a hidden field): the Pools page shows several."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from prebuildd.api.auditing import audited
from prebuildd.api.context import Services
from prebuildd.api.routes.prebuilds import prebuild_operations
from prebuildd.dashboard.pagekit import PageUser, ServicesDep, render
from prebuildd.dashboard.session import CheckedForm
from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.domain.permissions import Action
from prebuildd.domain.pools import MAX_INSTANCES
from prebuildd.identity import users
from prebuildd.identity.audit import AuditContext
from prebuildd.identity.users import User

router = APIRouter()

MAX_NAME = 63


def _field(form: dict[str, str], name: str, *, required: bool = True) -> str | None:
    value = form.get(name, "").strip()
    if len(value) > MAX_NAME:
        raise _invalid(f"{name}: at most {MAX_NAME} characters")
    if not value:
        if required:
            raise _invalid(f"{name} is required")
        return None
    return value


def _invalid(message: str) -> PrebuilddError:
    return PrebuilddError(ErrorCode.INVALID_REQUEST, message)


async def acting(
    services: Services, request: Request, user: User, form: dict[str, str], action: Action
) -> User:
    """The user as a member of the organization the form names (the session's when it names none), refused
    (403) unless they may do ``action`` there; the request's audit entries name that organization."""
    named = form.get("organization", "").strip()
    if named:
        try:
            UUID(named)
        except ValueError as exc:
            raise _invalid("organization: not an organization id") from exc
        member = await users.acting_user(services.db, user, named)
    else:
        member = user
    audit: AuditContext | None = getattr(request.state, "audit", None)
    if audit is not None:
        audit.organization_id = member.organization_id
    users.require(member, action)
    return member


def _audit(request: Request) -> AuditContext:
    audit: AuditContext = request.state.audit
    return audit


def _back(form: dict[str, str], default: str = "/pools") -> RedirectResponse:
    target = form.get("next", "")
    if not (target.startswith("/") and not target.startswith("//") and "\\" not in target):
        target = default
    return RedirectResponse(target, status_code=303)


@router.post("/actions/pause", name="action_pause")
@audited("prebuilds.pause", "site")
async def pause(request: Request, services: ServicesDep, user: PageUser, form: CheckedForm) -> Response:
    paused = form.get("paused", "true") == "true"
    audit = _audit(request)
    audit.action = "prebuilds.pause" if paused else "prebuilds.resume"
    users.require(user, Action.RECONCILIATION_PAUSE)
    await prebuild_operations(services).set_paused(paused, user.id, audit=audit)
    return _back(form)


@router.post("/actions/retry", name="action_retry")
@audited("prebuilds.retry", "template")
async def retry(request: Request, services: ServicesDep, user: PageUser, form: CheckedForm) -> Response:
    return await _pool_operation(request, services, user, form, "retry")


@router.post("/actions/invalidate", name="action_invalidate")
@audited("prebuilds.invalidate", "template")
async def invalidate(request: Request, services: ServicesDep, user: PageUser, form: CheckedForm) -> Response:
    return await _pool_operation(request, services, user, form, "invalidate")


async def _pool_operation(
    request: Request,
    services: Services,
    user: User,
    form: dict[str, str],
    operation: Literal["retry", "invalidate"],
) -> Response:
    """Retry or invalidate a template's pools (or one preset's), as the API's routes of the same name."""
    member = await acting(services, request, user, form, Action.PREBUILDS_OPERATE)
    assert member.organization_id is not None
    template = _field(form, "template")
    assert template is not None
    operations = prebuild_operations(services)
    run = operations.retry if operation == "retry" else operations.invalidate
    await run(member.organization_id, template, _field(form, "preset", required=False), audit=_audit(request))
    return _back(form)


@router.get("/orgs/{org}/pools/{template}/{preset}/cleanup", response_class=HTMLResponse, name="cleanup_page")
async def cleanup_page(
    request: Request, org: str, template: str, preset: str, services: ServicesDep, user: PageUser
) -> HTMLResponse:
    """The dry run: the failed prebuilds a cleanup would delete, and the form that confirms it."""
    member = await users.acting_user(services.db, user, org)
    users.require(member, Action.PREBUILDS_OPERATE)
    assert member.organization_id is not None
    failed, errors = await prebuild_operations(services).cleanup(
        member.organization_id, template, preset, dry_run=True
    )
    context: dict[str, Any] = {
        "org": org,
        "organization_id": member.organization_id,
        "template": template,
        "preset": preset,
        "failed": failed,
        "errors": errors,
        "show_errors": users.may(member, Action.OUTPUTS_READ),
        "done": False,
    }
    return render(request, "cleanup.html", context, user=user)


@router.post("/actions/cleanup", response_class=HTMLResponse, name="action_cleanup")
@audited("prebuilds.cleanup", "template")
async def cleanup(request: Request, services: ServicesDep, user: PageUser, form: CheckedForm) -> Response:
    member = await acting(services, request, user, form, Action.PREBUILDS_OPERATE)
    assert member.organization_id is not None
    template = _field(form, "template")
    preset = _field(form, "preset", required=False)
    assert template is not None
    failed, errors = await prebuild_operations(services).cleanup(
        member.organization_id, template, preset, dry_run=False, audit=_audit(request)
    )
    context: dict[str, Any] = {
        "org": str(member.organization_id),
        "organization_id": member.organization_id,
        "template": template,
        "preset": preset or "",
        "failed": failed,
        "errors": errors,
        "show_errors": users.may(member, Action.OUTPUTS_READ),
        "done": True,
    }
    return render(request, "cleanup.html", context, user=user)


def _count(form: dict[str, str], name: str, *, low: int, high: int) -> int | None:
    text = form.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError as exc:
        raise _invalid(f"{name}: a whole number") from exc
    if not low <= value <= high:
        raise _invalid(f"{name}: between {low} and {high}")
    return value


@router.post("/actions/pool", name="action_pool")
@audited("preset.set", "preset", "preset")
async def pool_settings(
    request: Request, services: ServicesDep, user: PageUser, form: CheckedForm
) -> Response:
    """``presets set``: instances, and autoscale on (min, max, target hit rate) or off."""
    member = await acting(services, request, user, form, Action.TEMPLATE_WRITE)
    assert member.organization_id is not None
    template, preset = _field(form, "template"), _field(form, "preset")
    assert template is not None and preset is not None
    audit = _audit(request)
    audit.about("preset", f"{template}/{preset}")
    instances = _count(form, "instances", low=0, high=MAX_INSTANCES)
    autoscale: dict[str, Any] | None = None
    clear_autoscale = False
    if form.get("autoscale") == "on":
        autoscale = {}
        low = _count(form, "autoscale_min", low=0, high=MAX_INSTANCES)
        high = _count(form, "autoscale_max", low=1, high=MAX_INSTANCES)
        if low is not None:
            autoscale["min"] = low
        if high is not None:
            autoscale["max"] = high
        rate = form.get("target_hit_rate", "").strip()
        if rate:
            try:
                value = float(rate)
            except ValueError as exc:
                raise _invalid("target_hit_rate: a number between 0 and 1") from exc
            if not 0 < value < 1:
                raise _invalid("target_hit_rate: a number between 0 and 1 (e.g. 0.95)")
            autoscale["target_hit_rate"] = value
    elif form.get("autoscale") == "off":
        clear_autoscale = True
    await prebuild_operations(services).set_pool(
        member.organization_id,
        template,
        preset,
        instances=instances,
        autoscale=autoscale,
        clear_autoscale=clear_autoscale,
        audit=audit,
    )
    return _back(form)
