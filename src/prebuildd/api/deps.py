"""FastAPI dependencies: the shared services, the authenticated user, role checks, provisioner keys, agents.

Each authenticated dependency gives a typed identity (``User``, ``ProvisionerKey``, ``Agent``), never a row.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prebuildd.api.context import Services
from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.identity import auth
from prebuildd.identity.auth import Agent, ProvisionerKey
from prebuildd.identity.users import ROLE_RANK, User, has_role, is_site_owner

__all__ = [
    "ROLE_RANK",
    "AgentDep",
    "MetricsReaderDep",
    "OwnerDep",
    "ProvisionerKeyDep",
    "ServicesDep",
    "TemplateAdminDep",
    "UserDep",
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
    services: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> User:
    if credentials is None:
        raise PrebuilddError(
            ErrorCode.UNAUTHENTICATED,
            "authentication required: send an API token as 'Authorization: Bearer <token>'",
        )
    user = await auth.user_for_token(services.db, services.clock, credentials.credentials)
    if user is None:
        raise PrebuilddError(ErrorCode.UNAUTHENTICATED, "invalid, expired or revoked API token")
    return user


UserDep = Annotated[User, Depends(current_user)]


def require_role(role: str) -> Any:
    async def check(user: UserDep) -> User:
        if not has_role(user, role):
            raise PrebuilddError(ErrorCode.FORBIDDEN, f"this needs the {role} role; you are {user.role}")
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
