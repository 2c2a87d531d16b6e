"""API tokens and provisioner keys: random secrets shown once, stored as SHA-256 hashes.

Who may do what with a token lives here too: a user sees and revokes their own tokens; an owner creates and
revokes the tokens of a member of their organization only when they own every organization that member belongs
to (a token works in all of them); the site owner, anyone's.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from uuid import UUID, uuid4

from prebuildd.domain.errors import ErrorCode, PrebuilddError, not_found
from prebuildd.domain.permissions import Action
from prebuildd.domain.secrets import AGENT_TOKEN_PREFIX, KEY_PREFIX, TOKEN_PREFIX, new_secret, secret_hash
from prebuildd.identity.audit import AuditContext, record
from prebuildd.identity.users import administers, may, organization_of, user_named
from prebuildd.runtime.clock import Clock
from prebuildd.store import identity as store
from prebuildd.store.db import Database
from prebuildd.store.errors import StoreConflict
from prebuildd.store.identity import Agent, ProvisionerKey, Token, TokenHolder, User

__all__ = [
    "AGENT_TOKEN_PREFIX",
    "KEY_PREFIX",
    "TOKEN_PREFIX",
    "Agent",
    "ProvisionerKey",
    "Token",
    "TokenHolder",
    "new_secret",
    "secret_hash",
]

_TOUCH_EVERY = timedelta(minutes=1)


async def create_token(
    db: Database,
    clock: Clock,
    *,
    user_id: UUID,
    name: str,
    lifetime: timedelta | None = None,
    audit: AuditContext | None = None,
    holder_name: str = "",
) -> tuple[Token, str]:
    """A new API token for ``user_id``; the secret is returned once and never stored."""
    secret = new_secret(TOKEN_PREFIX)
    now = clock.now()
    async with db.transaction() as conn:
        token = await store.insert_token(
            conn,
            id=uuid4(),
            user_id=user_id,
            name=name,
            token_hash=secret_hash(secret),
            now=now,
            expires_at=now + lifetime if lifetime else None,
        )
        await record(
            conn,
            audit,
            "token.create",
            type="token",
            name=name,
            id=token.id,
            detail={"user": holder_name, "user_id": str(user_id), "expires_at": _iso(token.expires_at)},
        )
    return token, secret


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


async def issue_token(
    db: Database,
    clock: Clock,
    actor: User,
    *,
    name: str,
    username: str | None = None,
    lifetime: timedelta | None = None,
    audit: AuditContext | None = None,
) -> tuple[Token, str]:
    """A token for ``actor``, or for ``username``, a member of the actor's organization the actor administers."""
    if audit is not None:
        audit.about("token", name, organization_id=actor.organization_id)
    holder = actor
    if username is not None and username.lower() != actor.username.lower():
        if not may(actor, Action.TOKENS_FOR_OTHERS):
            raise PrebuilddError(ErrorCode.FORBIDDEN, "only owners create tokens for other users")
        holder = await user_named(db, await organization_of(db, actor), username)
        if not await administers(db, actor, holder):
            raise PrebuilddError(
                ErrorCode.FORBIDDEN,
                f"{username} also belongs to organizations you do not own: only the site owner creates "
                "their tokens",
            )
    return await create_token(
        db, clock, user_id=holder.id, name=name, lifetime=lifetime, audit=audit, holder_name=holder.username
    )


async def tokens_of(db: Database, user: User) -> list[Token]:
    """The user's tokens, revoked and expired ones too."""
    async with db.transaction() as conn:
        return await store.tokens_of_user(conn, user.id)


async def revoke_token(
    db: Database, clock: Clock, actor: User, token_id: UUID, *, audit: AuditContext | None = None
) -> None:
    """Revoke one of the actor's active tokens, or of a member the actor administers; 404 when there is no
    such token (or it is someone else's the actor may not touch)."""
    if audit is not None:
        audit.about("token", id=token_id, organization_id=actor.organization_id)
    async with db.transaction() as conn:
        holder_id = await store.token_holder(conn, token_id)
    if holder_id is None:
        raise not_found(f"active token {token_id}")
    if holder_id != actor.id and not actor.site_owner:
        if not may(actor, Action.TOKENS_FOR_OTHERS):
            raise not_found(f"active token {token_id}")
        organization_id = await organization_of(db, actor)
        async with db.transaction() as conn:
            members = await store.members(conn, organization_id)
        holder = next((m for m in members if m.id == holder_id), None)
        if holder is None or not await administers(db, actor, holder):
            raise not_found(f"active token {token_id}")
    async with db.transaction() as conn:
        revoked = await store.revoke_token(conn, id=token_id, user_id=holder_id, now=clock.now())
        if revoked:
            await record(
                conn, audit, "token.revoke", type="token", id=token_id, detail={"user_id": str(holder_id)}
            )
    if not revoked:
        raise not_found(f"active token {token_id}")


async def user_for_token(db: Database, clock: Clock, secret: str) -> User | None:
    """The active user behind ``secret``, or None (unknown, revoked, expired, suspended)."""
    holder = await holder_of_token(db, clock, secret)
    return None if holder is None else holder.user


async def holder_of_token(db: Database, clock: Clock, secret: str) -> TokenHolder | None:
    """The active user behind ``secret`` with the token's id (what the audit log records), or None."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    now = clock.now()
    # Autocommit: the read is one statement (no BEGIN/COMMIT round trips on every request); the touch, when due,
    # is one more, a transaction of its own. Never cached: a revoked token is refused at once by every process.
    async with db.autocommit() as conn:
        holder = await store.holder_of_token(conn, secret_hash(secret), now)
        if holder is None:
            return None
        last = holder.token_last_used_at
        if last is None or now - last > _TOUCH_EVERY:  # not a write on every request
            await store.touch_token(conn, holder.token_id, now)
    return holder


# -- provisioner keys --------------------------------------------------------------------------------------


async def create_provisioner_key(
    db: Database,
    clock: Clock,
    *,
    organization_id: UUID | None,
    name: str,
    tags: Mapping[str, str],
    audit: AuditContext | None = None,
) -> tuple[ProvisionerKey, str]:
    """A new provisioner key of the organization (None: a site-wide key, serving every organization); the secret is
    returned once. A live key of the same name is a conflict."""
    if audit is not None:
        audit.about("provisioner_key", name, organization_id=organization_id)
    secret = new_secret(KEY_PREFIX)
    try:
        async with db.transaction() as conn:
            key = await store.insert_provisioner_key(
                conn,
                id=uuid4(),
                organization_id=organization_id,
                name=name,
                key_hash=secret_hash(secret),
                tags=tags,
                now=clock.now(),
            )
            await record(
                conn,
                audit,
                "key.create",
                type="provisioner_key",
                name=name,
                id=key.id,
                organization_id=organization_id,
                detail={"tags": dict(tags)},
            )
    except StoreConflict:
        raise PrebuilddError(
            ErrorCode.CONFLICT,
            f"a provisioner key named {name!r} already exists: revoke it first or choose another name",
        ) from None
    return key, secret


async def provisioner_keys(
    db: Database, organization_id: UUID | None, *, include_revoked: bool
) -> list[ProvisionerKey]:
    async with db.transaction() as conn:
        keys = await store.provisioner_keys(conn, organization_id)
    return [key for key in keys if include_revoked or key.revoked_at is None]


async def revoke_provisioner_key(
    db: Database, clock: Clock, organization_id: UUID | None, key: str, *, audit: AuditContext | None = None
) -> UUID:
    """Revoke the active key named ``key`` (by id or name) and return its id; 404 when there is none."""
    if audit is not None:
        audit.about("provisioner_key", key, organization_id=organization_id)
    async with db.transaction() as conn:
        key_id = await store.revoke_provisioner_key(
            conn, organization_id=organization_id, key=key, now=clock.now()
        )
        if key_id is not None:
            await record(
                conn,
                audit,
                "key.revoke",
                type="provisioner_key",
                name=key,
                id=key_id,
                organization_id=organization_id,
            )
    if key_id is None:
        raise not_found(f"provisioner key {key!r}")
    return key_id


async def provisioner_key(db: Database, secret: str) -> ProvisionerKey | None:
    if not secret.startswith(KEY_PREFIX):
        return None
    async with db.transaction() as conn:
        return await store.provisioner_key_by_hash(conn, secret_hash(secret))


async def provisioner_key_active(db: Database, key_id: UUID) -> bool:
    """Whether the key is still active (a long poll checks it again while it waits)."""
    async with db.transaction() as conn:
        return await store.provisioner_key_active(conn, key_id)


async def agent_for_token(db: Database, secret: str) -> Agent | None:
    """The agent behind ``secret`` with its workspace, or None (unknown token, or the workspace is deleted)."""
    if not secret.startswith(AGENT_TOKEN_PREFIX):
        return None
    async with db.transaction() as conn:
        return await store.agent_by_token(conn, secret_hash(secret))
