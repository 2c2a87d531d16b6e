"""FastAPI dependencies: the shared services, the authenticated user in the organization the request names,
permission checks (the table in ``domain.permissions``), provisioner keys, agents.

Each authenticated dependency gives a typed identity (``User``, ``ProvisionerKey``, ``Agent``), never a row. A
user comes with the organization the request acts in (the ``Prebuildd-Organization`` header, or the user's only
organization) and their role there.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prebuildd.api.auditing import remember_actor
from prebuildd.api.context import Services
from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.domain.permissions import Action
from prebuildd.identity import auth, users
from prebuildd.identity.audit import AuditContext
from prebuildd.identity.auth import Agent, ProvisionerKey
from prebuildd.identity.users import ROLE_RANK, User, has_role, is_site_owner, may

__all__ = [
    "ORGANIZATION_HEADER",
    "ROLE_RANK",
    "AgentDep",
    "AuditDep",
    "MetricsReaderDep",
    "OwnerDep",
    "ProvisionerKeyDep",
    "ServicesDep",
    "SiteOwnerDep",
    "TemplateAdminDep",
    "UserDep",
    "has_role",
    "may",
    "permission",
    "require_role",
]

ORGANIZATION_HEADER = "Prebuildd-Organization"

_bearer = HTTPBearer(
    auto_error=False, description="An API token (pbt_…) or, for daemons, a provisioner key (pbk_…)"
)


async def get_services(request: Request) -> Services:
    # async (as every dependency here): FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop
    # per request for an attribute read.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


OrganizationHeader = Annotated[
    str | None,
    Header(
        alias=ORGANIZATION_HEADER,
        description="The organization the request acts in (name or id); optional for a member of one",
        max_length=63,
    ),
]


async def token_user(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The user behind the request's API token, in no organization yet (one lookup per request: FastAPI caches
    it); it is also who the request's audit entries name."""
    if credentials is None:
        raise PrebuilddError(
            ErrorCode.UNAUTHENTICATED,
            "authentication required: send an API token as 'Authorization: Bearer <token>'",
        )
    holder = await auth.holder_of_token(services.db, services.clock, credentials.credentials)
    if holder is None:
        raise PrebuilddError(ErrorCode.UNAUTHENTICATED, "invalid, expired or revoked API token")
    remember_actor(request, services, holder)
    request.state.token_holder = holder  # its memberships, read with it, for the request's organization
    return holder.user


TokenUserDep = Annotated[User, Depends(token_user)]


def _acting_in(request: Request, user: User) -> User:
    audit: AuditContext | None = getattr(request.state, "audit", None)
    if audit is not None:
        audit.organization_id = user.organization_id
    return user


async def current_user(
    request: Request, services: ServicesDep, user: TokenUserDep, organization: OrganizationHeader = None
) -> User:
    """The caller as a member of the organization the request acts in."""
    known = getattr(request.state, "token_holder", None)
    return _acting_in(request, await users.acting_user(services.db, user, organization or None, known=known))


async def any_user(
    request: Request, services: ServicesDep, user: TokenUserDep, organization: OrganizationHeader = None
) -> User:
    """The caller, in the organization named or their only one, else in none (a member of several who named
    none): for the routes about organizations themselves."""
    known = getattr(request.state, "token_holder", None)
    acting = await users.acting_user(services.db, user, organization or None, needed=False, known=known)
    return _acting_in(request, acting)


AnyUserDep = Annotated[User, Depends(any_user)]
UserDep = Annotated[User, Depends(current_user)]


async def audit_context(request: Request, user: TokenUserDep) -> AuditContext:
    """Who is acting in this request, for the audit entries of the action (see ``api.auditing``)."""
    audit: AuditContext = request.state.audit
    return audit


AuditDep = Annotated[AuditContext, Depends(audit_context)]


def permission(action: Action) -> Any:
    """A dependency giving the user, refused (403) unless they may do ``action`` in the request's organization."""

    async def check(user: UserDep) -> User:
        users.require(user, action)
        return user

    # What the route needs, readable from its dependencies (e.g. by a test that lists routes and actions).
    check.action = action  # type: ignore[attr-defined]
    return Depends(check)


def require_role(role: str) -> Any:
    async def check(user: UserDep) -> User:
        if not has_role(user, role):
            raise PrebuilddError(
                ErrorCode.FORBIDDEN, f"this needs the {role} role; you are {user.role or 'not a member'} here"
            )
        return user

    return Depends(check)


TemplateAdminDep = Annotated[User, require_role("template-admin")]
OwnerDep = Annotated[User, require_role("owner")]


async def metrics_reader(
    services: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """``/metrics`` is site-wide operator data: the ``--metrics-token``, or a site owner's API token, unless the
    operator opened it with ``--metrics-public``."""
    config = services.config
    if config.metrics_public:
        return
    if credentials is None:
        raise PrebuilddError(
            ErrorCode.UNAUTHENTICATED,
            "authentication required: send the --metrics-token, or a site owner's API token, as "
            "'Authorization: Bearer <token>' (or start the server with --metrics-public)",
        )
    secret = credentials.credentials
    if config.metrics_token and hmac.compare_digest(secret.encode(), config.metrics_token.encode()):
        return
    user = await auth.user_for_token(services.db, services.clock, secret)
    if user is None:
        raise PrebuilddError(
            ErrorCode.UNAUTHENTICATED, "invalid metrics token, or invalid, expired or revoked API token"
        )
    if not is_site_owner(user):
        raise PrebuilddError(
            ErrorCode.FORBIDDEN,
            "/metrics is site-wide operator data: it needs the site owner or the metrics token",
        )


MetricsReaderDep = Annotated[None, Depends(metrics_reader)]


async def _site_owner(user: AnyUserDep) -> User:
    users.require(user, Action.ORGS_MANAGE)
    return user


_site_owner.action = Action.ORGS_MANAGE  # type: ignore[attr-defined]


SiteOwnerDep = Annotated[User, Depends(_site_owner)]


async def current_provisioner_key(
    services: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> ProvisionerKey:
    if credentials is None:
        raise PrebuilddError(
            ErrorCode.UNAUTHENTICATED,
            "authentication required: send a provisioner key as 'Authorization: Bearer <key>'",
        )
    key = await auth.provisioner_key(services.db, credentials.credentials)
    if key is None:
        raise PrebuilddError(ErrorCode.UNAUTHENTICATED, "invalid or revoked provisioner key")
    return key


ProvisionerKeyDep = Annotated[ProvisionerKey, Depends(current_provisioner_key)]


async def current_agent(
    services: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Agent:
    if credentials is None:
        raise PrebuilddError(
            ErrorCode.UNAUTHENTICATED,
            "authentication required: send the agent token as 'Authorization: Bearer <token>'",
        )
    agent = await auth.agent_for_token(services.db, credentials.credentials)
    if agent is None:
        raise PrebuilddError(ErrorCode.UNAUTHENTICATED, "invalid agent token, or its workspace was deleted")
    return agent


AgentDep = Annotated[Agent, Depends(current_agent)]
