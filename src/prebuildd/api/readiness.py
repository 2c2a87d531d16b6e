"""Readiness checks: what ``/readyz`` asks, each bounded in time, so that the answer is fast and names the reason.

The database check lives here; the server registers the checks of what this replica is configured to run (its
embedded daemons, its reconcile loop) into ``Services.readiness_checks``, so the API never imports the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prebuildd.store.db import Database
from prebuildd.store.errors import StoreError
from prebuildd.store.migrate import pending_migrations

CHECK_TIMEOUT = 0.8
"""Each check's bound: /readyz answers within a second even when the database hangs."""


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    reason: str = ""
    """Why not ready (empty when ok), for the 503's message."""
    detail: dict[str, Any] = field(default_factory=dict)
    database_down: bool = False
    """The reason is an unreachable database (the 503's code is then ``database_unavailable``)."""

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": self.ok, **self.detail}
        if self.reason:
            body["reason"] = self.reason
        return body


@dataclass(frozen=True)
class ReadinessCheck:
    name: str
    check: Callable[[], Awaitable[CheckResult]]


async def database_check(db: Database) -> CheckResult:
    try:
        async with db.transaction(readonly=True) as conn:
            pending = await pending_migrations(conn)
    except (StoreError, OSError) as exc:
        message = exc.message if isinstance(exc, StoreError) else str(exc)
        return CheckResult(False, f"database unreachable: {message}", database_down=True)
    if pending:
        return CheckResult(False, f"migrations not applied: {pending}", {"pending_migrations": pending})
    return CheckResult(True)


_abandoned: set[asyncio.Task[CheckResult]] = set()


async def run_check(check: ReadinessCheck, timeout: float = CHECK_TIMEOUT) -> CheckResult:
    """The check's result, or a failure once ``timeout`` has passed (the check is then canceled in the background:
    a connection to a frozen database may take a while to give up, and the answer must not wait for it)."""
    task = asyncio.ensure_future(check.check())
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        _abandoned.add(task)
        task.add_done_callback(_forget)
        return CheckResult(False, f"no answer within {timeout:.1f} s", database_down=check.name == "database")
    try:
        return task.result()
    except Exception as exc:  # a check that fails is a reason, not a 500
        return CheckResult(False, f"check failed: {type(exc).__name__}: {exc}")


def _forget(task: asyncio.Task[CheckResult]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: never "Task exception was never retrieved"
