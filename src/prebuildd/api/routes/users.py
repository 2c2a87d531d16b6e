"""Routes: users (who they are, roles, suspension) and API tokens (created with their secret shown once)."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import psycopg
from fastapi import APIRouter, Response

from prebuildd.api.deps import OwnerDep, ServicesDep, TemplateAdminDep, UserDep, has_role
from prebuildd.api.lookups import organization_of, user_named
from prebuildd.api.models import (
    CreatedToken,
    TokenCreate,
    TokenOut,
    UserCreate,
    Username,
    UserOut,
    UserUpdate,
)
from prebuildd.domain.errors import ErrorCode, PrebuilddError, not_found
from prebuildd.identity.auth import create_token
from prebuildd.identity.users import create_user
from prebuildd.store.db import fetch_all, fetch_one, fetch_val

router = APIRouter(tags=["users"])


@router.get("/users/me", response_model=UserOut, summary="The user behind the token")
async def me(user: UserDep) -> UserOut:
    return UserOut.from_row(user)


@router.get("/users", response_model=list[UserOut], summary="Every user")
async def list_users(services: ServicesDep, user: TemplateAdminDep) -> list[UserOut]:
    async with services.db.transaction() as conn:
        rows = await fetch_all(conn, "api.users")
    return [UserOut.from_row(row) for row in rows]


@router.post("/users", response_model=UserOut, status_code=201, summary="Create a user")
async def add_user(body: UserCreate, services: ServicesDep, user: OwnerDep) -> UserOut:
    organization_id = await organization_of(services, user)
    try:
        created = await create_user(
            services.db,
            services.clock,
            username=body.username,
            role=body.role,
            email=body.email,
            organization_id=organization_id,
        )
    except psycopg.errors.UniqueViolation:
        raise PrebuilddError(ErrorCode.CONFLICT, f"username {body.username} is taken") from None
    return UserOut.from_row(created)


@router.patch(
    "/users/{username}",
    response_model=UserOut,
    summary="Change a user's role or suspend them (a suspended user's tokens stop working)",
)
async def update_user(username: Username, body: UserUpdate, services: ServicesDep, user: OwnerDep) -> UserOut:
    target = await user_named(services, username)
    async with services.db.transaction() as conn:
        await fetch_all(conn, "api.lock_active_owners")
        row = await fetch_one(
            conn,
            "api.update_user",
            {"id": target["id"], "role": body.role, "suspended": body.suspended, "now": services.clock.now()},
        )
        if row is None:
            raise not_found(f"user {username}")
        if await fetch_val(conn, "api.active_owner_count") == 0:
            raise PrebuilddError(
                ErrorCode.CONFLICT,
                f"refused: {username} is the last active owner; make another user owner first",
            )
    return UserOut.from_row(row)


# -- tokens ------------------------------------------------------------------------------------------------


@router.get("/tokens", response_model=list[TokenOut], summary="Your API tokens, revoked and expired ones too")
async def list_tokens(services: ServicesDep, user: UserDep) -> list[TokenOut]:
    async with services.db.transaction() as conn:
        rows = await fetch_all(conn, "auth.tokens_of_user", {"user_id": user["id"]})
    return [TokenOut.from_row(row) for row in rows]


@router.post(
    "/tokens",
    response_model=CreatedToken,
    status_code=201,
    summary="Create an API token; its secret is shown only in this answer",
)
async def add_token(body: TokenCreate, services: ServicesDep, user: UserDep) -> CreatedToken:
    holder = user
    if body.username is not None and body.username.lower() != str(user["username"]).lower():
        if not has_role(user, "owner"):
            raise PrebuilddError(ErrorCode.FORBIDDEN, "only owners create tokens for other users")
        holder = await user_named(services, body.username)
    lifetime = timedelta(seconds=body.lifetime_seconds) if body.lifetime_seconds else None
    row, secret = await create_token(
        services.db, services.clock, user_id=holder["id"], name=body.name, lifetime=lifetime
    )
    return CreatedToken(token=TokenOut.from_row(row), secret=secret)


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    response_class=Response,
    summary="Revoke a token (your own; owners: anyone's); it is refused from the next request on",
)
async def revoke_token(token_id: UUID, services: ServicesDep, user: UserDep) -> Response:
    async with services.db.transaction() as conn:
        row = await fetch_one(
            conn,
            "auth.revoke_token",
            {
                "id": token_id,
                "user_id": user["id"],
                "any_user": has_role(user, "owner"),
                "now": services.clock.now(),
            },
        )
    if row is None:
        raise not_found(f"active token {token_id}")
    return Response(status_code=204)
