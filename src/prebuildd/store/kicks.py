"""Kicks across processes: an API worker process has no reconciler of its own, so it asks the server's by NOTIFY
(claims need none: the claim statement's own notification is the kick)."""

from __future__ import annotations

from prebuildd.store.db import Database
from prebuildd.store.rows import execute


async def notify_reconcile_kick(db: Database, reason: str) -> None:
    async with db.autocommit() as conn:
        await execute(conn, "kicks.kick", {"reason": reason})
