"""FastAPI dependencies: the shared services, the authenticated user, role checks, provisioner keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.identity import auth
from prebuildd.services import Services
from prebuildd.store.db import Row

_bearer = HTTPBearer(
    auto_error=False, description="An API token (pbt_…) or, for daemons, a provisioner key (pbk_…)"
)

ROLE_RANK = {"member": 0, "template-admin": 1, "owner": 2}


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def current_user(
    services: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Row:
    if credentials is None:
        raise PrebuilddError(
            ErrorCode.UNAUTHENTICATED,
            "authentication required: send an API token as 'Authorization: Bearer <token>'",
        )
    user = await auth.user_for_token(services.db, services.clock, credentials.credentials)
    if user is None:
        raise PrebuilddError(ErrorCode.UNAUTHENTICATED, "invalid, expired or revoked API token")
    return user


UserDep = Annotated[Row, Depends(current_user)]


def has_role(user: Row, role: str) -> bool:
    return ROLE_RANK[str(user["role"])] >= ROLE_RANK[role]


def require_role(role: str) -> Any:
    async def check(user: UserDep) -> Row:
        if not has_role(user, role):
            raise PrebuilddError(ErrorCode.FORBIDDEN, f"this needs the {role} role; you are {user['role']}")
        return user

    return Depends(check)


TemplateAdminDep = Annotated[Row, require_role("template-admin")]
OwnerDep = Annotated[Row, require_role("owner")]


async def current_provisioner_key(
    services: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Row:
    if credentials is None:
        raise PrebuilddError(
            ErrorCode.UNAUTHENTICATED,
            "authentication required: send a provisioner key as 'Authorization: Bearer <key>'",
        )
    key = await auth.provisioner_key(services.db, credentials.credentials)
    if key is None:
        raise PrebuilddError(ErrorCode.UNAUTHENTICATED, "invalid or revoked provisioner key")
    return key


ProvisionerKeyDep = Annotated[Row, Depends(current_provisioner_key)]


async def current_agent(
    services: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Row:
    if credentials is None:
        raise PrebuilddError(
            ErrorCode.UNAUTHENTICATED,
            "authentication required: send the agent token as 'Authorization: Bearer <token>'",
        )
    agent = await auth.agent_for_token(services.db, credentials.credentials)
    if agent is None:
        raise PrebuilddError(ErrorCode.UNAUTHENTICATED, "invalid agent token, or its workspace was deleted")
    return agent


AgentDep = Annotated[Row, Depends(current_agent)]
