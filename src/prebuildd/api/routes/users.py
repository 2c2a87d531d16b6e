"""Routes: users (who they are, their role in the organization, suspension), memberships, and API tokens
(created with their secret shown once). Every route acts in the organization the request names."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Response

from prebuildd.api.auditing import audited
from prebuildd.api.deps import AuditDep, ServicesDep, UserDep, permission
from prebuildd.api.models import (
    CreatedToken,
    MemberSet,
    TokenCreate,
    TokenOut,
    UserCreate,
    Username,
    UserOut,
    UserUpdate,
)
from prebuildd.domain.permissions import Action
from prebuildd.identity import auth, users
from prebuildd.identity.users import User

router = APIRouter(tags=["users"])

UsersReader = Annotated[User, permission(Action.USERS_READ)]
UsersManager = Annotated[User, permission(Action.USERS_MANAGE)]


@router.get("/users/me", response_model=UserOut, summary="The user behind the token, in the organization")
async def me(user: UserDep) -> UserOut:
    return UserOut.from_user(user)


@router.get("/users", response_model=list[UserOut], summary="The members of the organization")
async def list_users(services: ServicesDep, user: UsersReader) -> list[UserOut]:
    return [UserOut.from_user(u) for u in await users.list_users(services.db, user)]


@router.post("/users", response_model=UserOut, status_code=201, summary="Create a user in the organization")
@audited("user.create", "user")
async def add_user(body: UserCreate, services: ServicesDep, user: UsersManager, audit: AuditDep) -> UserOut:
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
    summary="Change a member's role in the organization, or suspend them (a suspended user's tokens stop working)",
)
@audited("user.role", "user", "username")
async def update_user(
    username: Username, body: UserUpdate, services: ServicesDep, user: UsersManager, audit: AuditDep
) -> UserOut:
    updated = await users.update_user(
        services.db, services.clock, user, username, role=body.role, suspended=body.suspended, audit=audit
    )
    return UserOut.from_user(updated)


@router.put(
    "/members/{username}",
    response_model=UserOut,
    summary="Add an existing user to the organization with a role, or change a member's role",
    responses={409: {"description": "The change would leave the organization without an active owner."}},
)
@audited("member.add", "user", "username")
async def set_member(
    username: Username, body: MemberSet, services: ServicesDep, user: UsersManager, audit: AuditDep
) -> UserOut:
    member = await users.set_member(services.db, services.clock, user, username, body.role, audit=audit)
    return UserOut.from_user(member)


@router.delete(
    "/members/{username}",
    status_code=204,
    response_class=Response,
    summary="Remove a member from the organization (the user and their other memberships stay)",
    responses={409: {"description": "The member is the organization's last active owner."}},
)
@audited("member.remove", "user", "username")
async def remove_member(
    username: Username, services: ServicesDep, user: UsersManager, audit: AuditDep
) -> Response:
    await users.remove_member(services.db, user, username, audit=audit)
    return Response(status_code=204)


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
    summary="Revoke a token (your own; owners: their members'); it is refused from the next request on",
)
@audited("token.revoke", "token", "token_id")
async def revoke_token(token_id: UUID, services: ServicesDep, user: UserDep, audit: AuditDep) -> Response:
    await auth.revoke_token(services.db, services.clock, user, token_id, audit=audit)
    return Response(status_code=204)
