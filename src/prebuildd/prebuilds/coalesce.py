"""Coalesced claims: concurrent claims of one preset share one claim statement (SPEC §7).

While a claim statement for a preset runs, further claims of that preset wait in line; when it ends, one statement
claims for all of them at once (at most ``max_batch``). A lone claim never waits for company, and under load one
round trip serves many requests. Each request keeps its own outcome and deadline: a statement runs under the
earliest deadline of its requests, a request whose deadline passes while it is still in line leaves it, and when
a shared statement fails (its deadline, one request's name already taken, a lost connection) every request of it
claims again alone, so that one request's failure never fails another.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

import structlog

from prebuildd.runtime.clock import Clock
from prebuildd.store.claims import claim_prebuild, claim_prebuilds
from prebuildd.store.db import Database
from prebuildd.store.errors import StoreError

log = structlog.get_logger(__name__)


@dataclass
class _Pending:
    owner_id: UUID
    name: str
    deadline: float
    """``loop.time()`` after which this request builds cold instead."""
    future: asyncio.Future[UUID | None]
    started: float
    """``time.perf_counter()`` when the request arrived: its claim latency is counted from here."""
    taken: bool = False
    """In a statement now: from here on its outcome comes from that statement (bounded by this deadline)."""


@dataclass
class ClaimCoalescer:
    """One per process, shared by every request of it."""

    db: Database
    clock: Clock
    max_batch: int = 64
    on_statement: Callable[[int], None] | None = None
    """Called with the number of requests each claim statement served (the batch-size histogram)."""
    _lines: dict[UUID, list[_Pending]] = field(default_factory=dict)
    _drainers: dict[UUID, asyncio.Task[None]] = field(default_factory=dict)

    async def claim(
        self, *, preset_id: UUID, owner_id: UUID, name: str, timeout: float, started: float | None = None
    ) -> UUID | None:
        """The prebuild handed to ``owner_id`` as ``name``, or None when none was eligible. Raises TimeoutError
        when the claim did not finish within ``timeout``, or the store's error of this request's own claim."""
        loop = asyncio.get_running_loop()
        pending = _Pending(
            owner_id,
            name,
            loop.time() + timeout,
            loop.create_future(),
            time.perf_counter() if started is None else started,
        )
        # A request canceled (its client gone) while its statement ran never reads the outcome.
        pending.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._lines.setdefault(preset_id, []).append(pending)
        if preset_id not in self._drainers:
            self._drainers[preset_id] = asyncio.create_task(self._drain(preset_id), name="claim-coalescer")
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(pending.deadline):
                    return await asyncio.shield(pending.future)
            if not pending.taken:
                raise TimeoutError
            # Its statement is running and bounded by this deadline: its outcome is the request's (a claim that
            # committed must not be dropped for a cold build of the same name).
            return await asyncio.shield(pending.future)
        finally:
            if not pending.taken:
                line = self._lines.get(preset_id, [])
                with contextlib.suppress(ValueError):
                    line.remove(pending)

    async def _drain(self, preset_id: UUID) -> None:
        line = self._lines[preset_id]
        try:
            while line:
                batch = line[: self.max_batch]
                del line[: self.max_batch]
                for pending in batch:
                    pending.taken = True
                await self._run(preset_id, batch)
        finally:
            del self._drainers[preset_id]
            if line:  # canceled or crashed with requests in line: they must not wait forever
                for pending in line:
                    if not pending.future.done():
                        pending.future.set_exception(TimeoutError())
                line.clear()
            if not line:
                self._lines.pop(preset_id, None)

    async def _run(self, preset_id: UUID, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            await self._alone(preset_id, batch[0])
            return
        try:
            async with asyncio.timeout_at(min(p.deadline for p in batch)):
                async with self.db.autocommit() as conn:
                    got = await claim_prebuilds(
                        conn,
                        preset_id=preset_id,
                        requests=[(p.owner_id, p.name) for p in batch],
                        now=self.clock.now(),
                        waited_ms=_waited_ms(batch),
                    )
        except (StoreError, TimeoutError, OSError) as exc:
            log.info(
                "claim.batch_failed",
                preset_id=str(preset_id),
                requests=len(batch),
                error=f"{type(exc).__name__}: {exc}",
            )
            await asyncio.gather(*(self._alone(preset_id, p) for p in batch))
            return
        self._count(len(batch))
        for pending, workspace_id in zip(batch, got, strict=True):
            if not pending.future.done():
                pending.future.set_result(workspace_id)

    async def _alone(self, preset_id: UUID, pending: _Pending) -> None:
        """The request's own claim statement; its outcome (or its error) is the request's alone."""
        if pending.future.done():
            return
        try:
            async with asyncio.timeout_at(pending.deadline):
                async with self.db.autocommit() as conn:
                    workspace_id = await claim_prebuild(
                        conn,
                        preset_id=preset_id,
                        owner_id=pending.owner_id,
                        name=pending.name,
                        now=self.clock.now(),
                        waited_ms=_waited_ms([pending])[0],
                    )
        except asyncio.CancelledError:
            pending.future.set_exception(TimeoutError())
            raise
        except Exception as exc:
            pending.future.set_exception(exc)
            return
        self._count(1)
        pending.future.set_result(workspace_id)

    def _count(self, requests: int) -> None:
        if self.on_statement is not None:
            self.on_statement(requests)


def _waited_ms(batch: list[_Pending]) -> list[float]:
    """Each request's time in line, and before it, up to the statement about to run."""
    now = time.perf_counter()
    return [(now - p.started) * 1000 for p in batch]
