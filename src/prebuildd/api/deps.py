"""FastAPI dependencies: the shared services, the authenticated user, role checks, provisioner keys, agents.

Each authenticated dependency gives a typed identity (``User``, ``ProvisionerKey``, ``Agent``), never a row.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prebuildd.api.auditing import remember_actor
from prebuildd.api.context import Services
from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.identity import auth
from prebuildd.identity.audit import AuditContext
from prebuildd.identity.auth import Agent, ProvisionerKey
from prebuildd.identity.users import ROLE_RANK, User, has_role

__all__ = [
    "ROLE_RANK",
    "AgentDep",
    "AuditDep",
    "OwnerDep",
    "ProvisionerKeyDep",
    "ServicesDep",
    "TemplateAdminDep",
    "UserDep",
    "check_role",
    "has_role",
    "require_role",
]

_bearer = HTTPBearer(
    auto_error=False, description="An API token (pbt_…) or, for daemons, a provisioner key (pbk_…)"
)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def current_user(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None:
        raise PrebuilddError(
            ErrorCode.UNAUTHENTICATED,
            "authentication required: send an API token as 'Authorization: Bearer <token>'",
        )
    holder = await auth.holder_of_token(services.db, services.clock, credentials.credentials)
    if holder is None:
        raise PrebuilddError(ErrorCode.UNAUTHENTICATED, "invalid, expired or revoked API token")
    remember_actor(request, services, holder)
    return holder.user


UserDep = Annotated[User, Depends(current_user)]


def audit_context(request: Request, user: UserDep) -> AuditContext:
    """Who is acting in this request, for the audit entries of the action (see ``api.auditing``)."""
    audit: AuditContext = request.state.audit
    return audit


AuditDep = Annotated[AuditContext, Depends(audit_context)]


def check_role(user: User, role: str) -> User:
    """``user``, or a refusal when their role is below ``role``."""
    if not has_role(user, role):
        raise PrebuilddError(ErrorCode.FORBIDDEN, f"this needs the {role} role; you are {user.role}")
    return user


def require_role(role: str) -> Any:
    async def check(user: UserDep) -> User:
        return check_role(user, role)

    return Depends(check)


TemplateAdminDep = Annotated[User, require_role("template-admin")]
OwnerDep = Annotated[User, require_role("owner")]


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
