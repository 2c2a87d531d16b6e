"""The audit recorder: one call writes an entry for an action, in the action's own transaction when it succeeds,
or on its own when it was refused or failed (the action's transaction rolled back). Also the reads of the log,
for owners, and the pruner that keeps it within its retention.

A service function takes an ``AuditContext`` (who acts, with which credential, from which request) and calls
:func:`record` inside the transaction that makes its change, so an entry exists if and only if the change was
committed. A context of None is a call from inside the server that is no operator's action (a test's set-up);
the server's own actions (the first owner, at first start) use :meth:`AuditContext.system`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import structlog

from prebuildd.domain.audit import outcome_of
from prebuildd.domain.errors import PrebuilddError
from prebuildd.runtime.clock import Clock
from prebuildd.runtime.faults import ChangeHook, FaultState
from prebuildd.store import audit as store
from prebuildd.store.audit import AuditEntry, AuditFilter, NewAuditEntry
from prebuildd.store.db import Conn, Database
from prebuildd.store.errors import StoreError, StoreTimeout, StoreUnavailable
from prebuildd.store.identity import User

__all__ = ["AuditContext", "AuditEntry", "AuditFilter", "AuditPruner", "record", "record_refusal"]

log = structlog.get_logger(__name__)

MAX_PAGE = 1000
_MAX_MESSAGE = 2000


@dataclass(frozen=True)
class Target:
    """What an action is on: its type ('template', 'user', ...), id, name and organization (None: site-wide)."""

    type: str
    name: str = ""
    id: UUID | str | None = None
    organization_id: UUID | None = None


@dataclass
class AuditContext:
    """Who acts, and from where: built once per request by the API (or by the server for its own actions)."""

    clock: Clock
    actor_id: UUID | None
    actor_name: str
    token_id: UUID | None = None
    request_id: str | None = None
    source_ip: str | None = None
    target: Target | None = None
    """What the action is on, as far as it is known yet: a refusal's entry names it."""
    organization_id: UUID | None = None
    """The organization the actor acts in (the default for a target that names none)."""
    action: str | None = None
    """The action, when the route knows it better than its mark (pause or resume: one route)."""

    @classmethod
    def of_user(cls, clock: Clock, user: User, **where: Any) -> AuditContext:
        return cls(clock, user.id, user.username, **where)

    @classmethod
    def system(cls, clock: Clock) -> AuditContext:
        """The server itself (first start): no user, no token."""
        return cls(clock, None, "system")

    def about(
        self,
        type: str,
        name: str = "",
        id: UUID | str | None = None,
        organization_id: UUID | None = None,
    ) -> None:
        """Name the action's object as soon as it is known, so that a refusal after this point names it too."""
        self.target = Target(type, name, id, organization_id)

    def entry(
        self,
        action: str,
        target: Target | None,
        outcome: str,
        *,
        detail: Mapping[str, Any] | None = None,
        error: PrebuilddError | None = None,
    ) -> NewAuditEntry:
        target = target or self.target or Target("")
        return NewAuditEntry(
            at=self.clock.now(),
            actor_id=self.actor_id,
            actor_name=self.actor_name,
            token_id=self.token_id,
            # A site-wide action (type 'site': the pause) names no organization, whichever the actor acts in.
            organization_id=None if target.type == "site" else target.organization_id or self.organization_id,
            action=action,
            object_type=target.type,
            object_id=None if target.id is None else str(target.id),
            object_name=target.name,
            outcome=outcome,
            error_code=None if error is None else error.code.value,
            error_message=None if error is None else error.message[:_MAX_MESSAGE],
            detail=dict(detail or {}),
            request_id=self.request_id,
            source_ip=self.source_ip,
        )


async def record(
    conn: Conn,
    audit: AuditContext | None,
    action: str,
    target: Target | None = None,
    *,
    detail: Mapping[str, Any] | None = None,
    **about: Any,
) -> None:
    """Record a successful ``action`` in the caller's transaction (it commits or rolls back with the change).

    The object is ``target``, or built from ``about`` (``type``, ``name``, ``id``, ``organization_id``), or the
    one the context was told of."""
    if audit is None:
        return
    if target is None and about:
        target = Target(**about)
    await store.insert_entry(conn, audit.entry(action, target, "ok", detail=detail))


async def record_refusal(db: Database, audit: AuditContext, action: str, error: PrebuilddError) -> None:
    """Record a refused or failed ``action`` in a transaction of its own. Never raises: a log that cannot be
    written (the database is down) must not hide the refusal's own answer; it is logged instead."""
    entry = audit.entry(action, None, outcome_of(error.code), error=error)
    try:
        async with db.transaction() as conn:
            await store.insert_entry(conn, entry)
    except StoreError as exc:
        log.warning(
            "audit.write_failed",
            action=action,
            actor=audit.actor_name,
            outcome=entry.outcome,
            request_id=audit.request_id,
            error=exc.message,
        )


async def entries(
    db: Database, where: AuditFilter, *, before: int | None = None, limit: int = 100
) -> list[AuditEntry]:
    """Entries newest first (``before``: an entry id, the cursor of the next page)."""
    async with db.transaction(readonly=True) as conn:
        return await store.entries(conn, where, before=before, limit=max(1, min(limit, MAX_PAGE)))


class AuditPruner:
    """Deletes entries older than the retention, ``batch`` rows per transaction so that a large backlog (a
    retention shortened, a server down for long) never holds long locks; runs every ``interval`` seconds."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        retention: timedelta,
        *,
        interval: float | None = None,
        batch: int = 1000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_change: ChangeHook | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.retention = retention
        # Entries are kept for days; an hourly pass (or a tenth of a short retention) is precise enough.
        self.interval = interval if interval is not None else min(retention.total_seconds() / 10, 3600.0)
        self.batch = batch
        self._sleep = sleep
        self.fault = FaultState("audit-pruner", on_change=on_change)

    async def prune_once(self) -> int:
        """One pass: delete every entry older than the retention, batch by batch; how many were deleted."""
        cutoff: datetime = self.clock.now() - self.retention
        total = 0
        while True:
            async with self.db.transaction() as conn:
                deleted = await store.prune(conn, cutoff, self.batch)
            total += deleted
            if deleted < self.batch:
                break
        if total:
            log.info("audit.pruned", deleted=total, cutoff=cutoff.isoformat())
        return total

    async def run(self) -> None:
        while True:
            try:
                await self.prune_once()
            except (StoreUnavailable, StoreTimeout, OSError) as exc:
                self.fault.failed(exc)
            else:
                self.fault.recovered()
            await self._sleep(self.interval)
