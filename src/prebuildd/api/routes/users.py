"""Routes: users (who they are, roles, suspension) and API tokens (created with their secret shown once)."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from fastapi import APIRouter, Response

from prebuildd.api.auditing import audited
from prebuildd.api.deps import AuditDep, OwnerDep, ServicesDep, TemplateAdminDep, UserDep
from prebuildd.api.models import (
    CreatedToken,
    TokenCreate,
    TokenOut,
    UserCreate,
    Username,
    UserOut,
    UserUpdate,
)
from prebuildd.identity import auth, users

router = APIRouter(tags=["users"])


@router.get("/users/me", response_model=UserOut, summary="The user behind the token")
async def me(user: UserDep) -> UserOut:
    return UserOut.from_user(user)


@router.get("/users", response_model=list[UserOut], summary="Every user")
async def list_users(services: ServicesDep, user: TemplateAdminDep) -> list[UserOut]:
    return [UserOut.from_user(u) for u in await users.list_users(services.db)]


@router.post("/users", response_model=UserOut, status_code=201, summary="Create a user")
@audited("user.create", "user")
async def add_user(body: UserCreate, services: ServicesDep, user: OwnerDep, audit: AuditDep) -> UserOut:
    created = await users.add_user(
        services.db,
        services.clock,
        user,
        username=body.username,
        role=body.role,
        email=body.email,
        audit=audit,
    )
    return UserOut.from_user(created)


@router.patch(
    "/users/{username}",
    response_model=UserOut,
    summary="Change a user's role or suspend them (a suspended user's tokens stop working)",
)
@audited("user.role", "user", "username")
async def update_user(
    username: Username, body: UserUpdate, services: ServicesDep, user: OwnerDep, audit: AuditDep
) -> UserOut:
    updated = await users.update_user(
        services.db, services.clock, username, role=body.role, suspended=body.suspended, audit=audit
    )
    return UserOut.from_user(updated)


# -- tokens ------------------------------------------------------------------------------------------------


@router.get("/tokens", response_model=list[TokenOut], summary="Your API tokens, revoked and expired ones too")
async def list_tokens(services: ServicesDep, user: UserDep) -> list[TokenOut]:
    return [TokenOut.from_token(token) for token in await auth.tokens_of(services.db, user)]


@router.post(
    "/tokens",
    response_model=CreatedToken,
    status_code=201,
    summary="Create an API token; its secret is shown only in this answer",
)
@audited("token.create", "token")
async def add_token(body: TokenCreate, services: ServicesDep, user: UserDep, audit: AuditDep) -> CreatedToken:
    lifetime = timedelta(seconds=body.lifetime_seconds) if body.lifetime_seconds else None
    token, secret = await auth.issue_token(
        services.db,
        services.clock,
        user,
        name=body.name,
        username=body.username,
        lifetime=lifetime,
        audit=audit,
    )
    return CreatedToken(token=TokenOut.from_token(token), secret=secret)


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    response_class=Response,
    summary="Revoke a token (your own; owners: anyone's); it is refused from the next request on",
)
@audited("token.revoke", "token", "token_id")
async def revoke_token(token_id: UUID, services: ServicesDep, user: UserDep, audit: AuditDep) -> Response:
    await auth.revoke_token(services.db, services.clock, user, token_id, audit=audit)
    return Response(status_code=204)
