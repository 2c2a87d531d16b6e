"""LISTEN/NOTIFY on a dedicated connection, fanned out to in-process waiters.

A notification is only a hint that something changed: every waiter also wakes on a timeout and re-reads the
database, so a lost connection (or a notification sent while it was down) delays work by one poll at most.
The connection is never shared with queries: waiting on `notifies()` holds it for the whole wait.

The listener is the first to notice a database outage (its connection breaks at once): it tells the pool to
check its idle connections, reconnects every ``reconnect_delay`` with one log line per state change
(``runtime.faults``), and when it is back after an outage it runs the ``on_reconnect`` hooks (the server kicks
the reconciler there). The server runs ``run`` under its supervisor; ``start``/``stop`` run it alone (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable

import psycopg
import structlog
from psycopg import sql

from prebuildd.runtime.faults import ChangeHook, FaultState
from prebuildd.store.db import Database
from prebuildd.store.errors import StoreError

log = structlog.get_logger(__name__)

Handler = Callable[[str, str], None]


class Listener:
    def __init__(
        self,
        db: Database,
        channels: tuple[str, ...],
        *,
        reconnect_delay: float = 1.0,
        on_change: ChangeHook | None = None,
    ) -> None:
        self.db = db
        self.channels = channels
        self.reconnect_delay = reconnect_delay
        self.fault = FaultState("listener", on_change=on_change)
        self.on_reconnect: list[Callable[[], None]] = []
        """Called when the connection is back after it was lost (not on the first connect)."""
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._handlers: list[Handler] = []
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def add_handler(self, handler: Handler) -> None:
        """``handler(channel, payload)`` runs in the listener's task for every notification; keep it quick."""
        self._handlers.append(handler)

    async def start(self) -> None:
        """Run in a task of its own (the server supervises ``run`` instead)."""
        self._task = asyncio.create_task(self.run(), name="listener")
        await self.wait_connected(10)

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):  # asyncio.timeout: wait_for may swallow a cancellation (3.11)
            async with asyncio.timeout(timeout):
                await self.connected.wait()
        return self.connected.is_set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait(self, channel: str, timeout: float) -> bool:
        """Wait for a notification on ``channel`` or the timeout; True when notified."""
        event = asyncio.Event()
        self._events[channel].add(event)
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._events[channel].discard(event)

    def _dispatch(self, channel: str, payload: str) -> None:
        for event in self._events.get(channel, ()):
            event.set()
        for handler in self._handlers:
            try:
                handler(channel, payload)
            except Exception:
                log.exception("listener.handler_failed", channel=channel)

    async def run(self) -> None:
        """Listen until canceled, reconnecting whenever the connection is lost."""
        while True:
            try:
                conn = await self.db.connect()
                try:
                    for channel in self.channels:
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self.connected.set()
                    log.debug("listener.connected", channels=self.channels)
                    if self.fault.recovered():
                        self._reconnected()
                    async for notify in conn.notifies():
                        self._dispatch(notify.channel, notify.payload)
                finally:
                    self.connected.clear()
                    with contextlib.suppress(Exception):
                        await conn.close()
                # notifies() ended without an error: the server closed the connection.
                raise psycopg.OperationalError("the LISTEN connection was closed")
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, StoreError, OSError) as exc:
                self.db.suspect()
                self.fault.failed(exc)
            await asyncio.sleep(self.reconnect_delay)

    def _reconnected(self) -> None:
        # Whatever was sent while we were away is found by the waiters' polling; wake them to look now.
        for channel in self.channels:
            self._dispatch(channel, "")
        for hook in self.on_reconnect:
            try:
                hook()
            except Exception:
                log.exception("listener.hook_failed")
