"""The API side of the audit log: request ids, the per-request ``AuditContext``, the ``audited`` mark on the
routes that change something, and the one place that records a refused or failed action.

A mutating route is marked ``@audited("template.push", "template", "name")``: the action's name, and which path
parameter names its object. The route passes the request's ``AuditContext`` to the service, which records a
success in its own transaction. When the route (or a dependency before it: a missing role, an invalid body)
raises instead, the API's error handlers call :func:`record_refusal`, which writes the entry on its own: the
action's transaction has rolled back. Unauthenticated requests are not recorded: there is nobody to name, and
anyone could fill the log with them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import uuid4

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prebuildd.api.context import Services
from prebuildd.domain.audit import ACTIONS
from prebuildd.domain.errors import PrebuilddError
from prebuildd.identity.audit import AuditContext, record_refusal
from prebuildd.identity.auth import TokenHolder

F = TypeVar("F", bound=Callable[..., Any])

REQUEST_ID_HEADER = "x-request-id"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass(frozen=True)
class AuditSpec:
    action: str
    object_type: str
    object_param: str | None


def audited(action: str, object_type: str = "", object_param: str | None = None) -> Callable[[F], F]:
    """Mark a route as the audited ``action`` on an ``object_type`` named by the path parameter
    ``object_param`` (what a refusal's entry names when the service did not get as far as naming it)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}: add it to domain.audit.ACTIONS")

    def mark(endpoint: F) -> F:
        endpoint.__audit__ = AuditSpec(action, object_type, object_param)  # type: ignore[attr-defined]
        return endpoint

    return mark


def audit_spec(endpoint: Any) -> AuditSpec | None:
    spec: AuditSpec | None = getattr(endpoint, "__audit__", None)
    return spec


class RequestIdMiddleware:
    """Gives every request an id (the client's ``X-Request-Id`` when it is a sane one) and sends it back, so an
    audit entry, a log line and a client's report can be matched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or ()).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = given if _CLIENT_REQUEST_ID.match(given) else uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id(request: Request) -> str | None:
    value: str | None = getattr(request.state, "request_id", None)
    return value


def remember_actor(request: Request, services: Services, holder: TokenHolder) -> None:
    """Called once the token is known: what the request's audit entries say of who acted."""
    request.state.audit = AuditContext.of_user(
        services.clock,
        holder.user,
        token_id=holder.token_id,
        request_id=request_id(request),
        source_ip=request.client.host if request.client else None,
    )


async def record_refusal_of(request: Request, error: PrebuilddError) -> None:
    """Record the refused or failed action of an audited route (nothing for other routes, nor for a request
    whose caller is unknown)."""
    spec = audit_spec(request.scope.get("endpoint"))
    audit: AuditContext | None = getattr(request.state, "audit", None)
    if spec is None or audit is None:
        return
    if audit.target is None and spec.object_type:
        name = request.path_params.get(spec.object_param, "") if spec.object_param else ""
        audit.about(spec.object_type, str(name))
    services: Services = request.app.state.services
    await record_refusal(services.db, audit, audit.action or spec.action, error)
