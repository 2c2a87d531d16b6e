"""API tokens and provisioner keys: random secrets shown once, stored as SHA-256 hashes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from uuid import UUID, uuid4

from prebuildd.domain.secrets import AGENT_TOKEN_PREFIX, KEY_PREFIX, TOKEN_PREFIX, new_secret, secret_hash
from prebuildd.runtime.clock import Clock
from prebuildd.store.db import Database, Row, execute, fetch_one, jsonb

__all__ = ["AGENT_TOKEN_PREFIX", "KEY_PREFIX", "TOKEN_PREFIX", "new_secret", "secret_hash"]

_TOUCH_EVERY = timedelta(minutes=1)


async def create_token(
    db: Database, clock: Clock, *, user_id: UUID, name: str, lifetime: timedelta | None = None
) -> tuple[Row, str]:
    """A new API token for ``user_id``; the secret is returned once and never stored."""
    secret = new_secret(TOKEN_PREFIX)
    now = clock.now()
    async with db.transaction() as conn:
        row = await fetch_one(
            conn,
            "auth.insert_token",
            {
                "id": uuid4(),
                "user_id": user_id,
                "name": name,
                "token_hash": secret_hash(secret),
                "now": now,
                "expires_at": now + lifetime if lifetime else None,
            },
        )
    assert row is not None
    return row, secret


async def user_for_token(db: Database, clock: Clock, secret: str) -> Row | None:
    """The active user behind ``secret``, or None (unknown, revoked, expired, suspended)."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    now = clock.now()
    async with db.transaction() as conn:
        user = await fetch_one(conn, "auth.user_by_token", {"token_hash": secret_hash(secret), "now": now})
        if user is not None:
            last = user["token_last_used_at"]
            if last is None or now - last > _TOUCH_EVERY:  # not a write on every request
                await execute(conn, "auth.touch_token", {"id": user["token_id"], "now": now})
    return user


async def create_provisioner_key(
    db: Database, clock: Clock, *, organization_id: UUID, name: str, tags: Mapping[str, str]
) -> tuple[Row, str]:
    secret = new_secret(KEY_PREFIX)
    async with db.transaction() as conn:
        row = await fetch_one(
            conn,
            "auth.insert_provisioner_key",
            {
                "id": uuid4(),
                "organization_id": organization_id,
                "name": name,
                "key_hash": secret_hash(secret),
                "tags": jsonb(dict(tags)),
                "now": clock.now(),
            },
        )
    assert row is not None
    return row, secret


async def provisioner_key(db: Database, secret: str) -> Row | None:
    if not secret.startswith(KEY_PREFIX):
        return None
    async with db.transaction() as conn:
        return await fetch_one(conn, "auth.provisioner_key_by_hash", {"key_hash": secret_hash(secret)})


async def agent_for_token(db: Database, secret: str) -> Row | None:
    """The agent behind ``secret`` with its workspace, or None (unknown token, or the workspace is deleted)."""
    if not secret.startswith(AGENT_TOKEN_PREFIX):
        return None
    async with db.transaction() as conn:
        return await fetch_one(conn, "agents.by_token", {"token_hash": secret_hash(secret)})
