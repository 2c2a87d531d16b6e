"""The connection pool and the few ways code borrows a connection from it.

Outages: a request waits at most ``timeout`` (``--db-timeout``) for a connection, then fails with
``StoreUnavailable`` (503 ``database_unavailable``). Once the pool knows the database is down (a connection
attempt was refused or timed out) it waits only ``FAST_FAIL`` seconds, so that every
request of an outage does not hang for the full timeout; the first connection that succeeds again ends that. The
pool's own reconnection gives up after ``RECONNECT_TIMEOUT`` and starts afresh on the next request, so that a long
outage does not leave it in a minute-long backoff when the database is back. Connections that were idle in the
pool when an outage was suspected (``suspect``: the listener lost its connection, a connection broke) are checked
once before use, so a restarted PostgreSQL costs no request an error; otherwise no borrow pays for a check.
The state changes are logged once each (``runtime.faults``); psycopg_pool's per-attempt warnings are silenced.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection, IsolationLevel
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from prebuildd.runtime.faults import ChangeHook, FaultState
from prebuildd.store.errors import StoreUnavailable, store_error
from prebuildd.store.sql import q

Conn = AsyncConnection[DictRow]

FAST_FAIL = 0.25
"""Seconds a request waits for a connection while the pool knows the database is down."""
RECONNECT_TIMEOUT = 5.0
"""How long the pool retries one lost connection (1 s, 2 s, ... apart) before it lets the next request retry."""

# One warning per connection attempt during an outage floods the log; ``FaultState`` logs the change instead.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def _connect_timeout(timeout: float) -> int:
    # libpq takes whole seconds and treats less than 2 as 2.
    return max(2, math.ceil(timeout))


class Database:
    """An async pool of dict-row connections to one PostgreSQL database."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 2,
        max_size: int = 20,
        name: str = "prebuildd",
        timeout: float = 30.0,
        on_change: ChangeHook | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.fault = FaultState("db-pool", on_change=on_change)
        self._epoch = 0
        self._checked: weakref.WeakKeyDictionary[Conn, int] = weakref.WeakKeyDictionary()
        self.pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            url,
            timeout=timeout,
            min_size=min_size,
            max_size=max_size,
            open=False,
            name=name,
            kwargs={
                "row_factory": dict_row,
                "autocommit": False,
                "connect_timeout": _connect_timeout(timeout),
            },
            configure=self._configure,
            check=self._check,
            reconnect_timeout=RECONNECT_TIMEOUT,
            reconnect_failed=self._reconnect_failed,
            connection_class=_connection_class(self),
        )

    async def open(self) -> Database:
        await self.pool.open(wait=True, timeout=30)
        return self

    async def close(self) -> None:
        await self.pool.close()

    @property
    def down(self) -> bool:
        """Whether the pool last failed to reach the database (requests then fail fast)."""
        return self.fault.down

    def suspect(self) -> None:
        """The database may have restarted: check each idle connection once before it is next used."""
        self._epoch += 1

    @asynccontextmanager
    async def _borrowed(self) -> AsyncIterator[Conn]:
        """A pooled connection; losing the database becomes ``StoreUnavailable`` here, at the store's boundary,
        so that callers see one project error and not psycopg's (a query's own errors pass through unchanged)."""
        timeout = min(FAST_FAIL, self.timeout) if self.fault.down else self.timeout
        try:
            async with self.pool.connection(timeout=timeout) as conn:
                self.fault.recovered()
                try:
                    yield conn
                except psycopg.Error as exc:  # at commit, or from a statement run outside the row helpers
                    if conn.broken:
                        self.suspect()
                    raise store_error(exc, broken=conn.broken) from exc
        except PoolTimeout as exc:
            # Not a state change by itself: a pool saturated by load times out too. A refused or timed-out
            # connection attempt (``_connect_failed``) is what says the database is down.
            raise StoreUnavailable(exc) from exc

    @asynccontextmanager
    async def transaction(
        self, *, isolation: IsolationLevel | None = None, readonly: bool = False
    ) -> AsyncIterator[Conn]:
        """A connection inside one transaction, committed on success and rolled back on error."""
        async with self._borrowed() as conn:
            if isolation is not None or readonly:
                await conn.set_isolation_level(isolation)
                await conn.set_read_only(readonly or None)
            try:
                async with conn.transaction():
                    yield conn
            finally:
                if isolation is not None or readonly:
                    await conn.set_isolation_level(None)
                    await conn.set_read_only(None)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Conn]:
        """A connection in autocommit mode, for one statement that is a transaction of its own: no BEGIN and
        COMMIT round trips. Several statements belong in ``transaction``."""
        async with self._borrowed() as conn:
            await conn.set_autocommit(True)
            try:
                yield conn
            finally:
                if not conn.closed:
                    await conn.set_autocommit(False)

    async def connect(self) -> Conn:
        """A dedicated connection outside the pool (for LISTEN and session locks); the caller closes it."""
        try:
            conn = await AsyncConnection.connect(
                self.url,
                row_factory=dict_row,
                autocommit=True,
                connect_timeout=_connect_timeout(self.timeout),
            )
            await conn.execute(q("connection.set_utc"))
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(exc) from exc
        return conn

    # -- the pool's callbacks ------------------------------------------------------------------------------

    async def _configure(self, conn: Conn) -> None:
        await conn.execute(q("connection.set_utc"))
        await conn.commit()
        self._checked[conn] = self._epoch
        self.fault.recovered()

    async def _check(self, conn: Conn) -> None:
        if self._checked.get(conn) == self._epoch:
            return
        await AsyncConnectionPool.check_connection(conn)
        self._checked[conn] = self._epoch

    async def _reconnect_failed(self, pool: AsyncConnectionPool[Any]) -> None:
        self.fault.failed(f"pool {pool.name!r} could not reconnect for {RECONNECT_TIMEOUT:.0f} s")

    def _connect_failed(self, exc: Exception) -> None:
        self.suspect()
        self.fault.failed(exc)


def _connection_class(db: Database) -> type[Conn]:
    """The pool's connection class, reporting each failed connection attempt to ``db`` (psycopg_pool only logs
    them): that is how the pool knows the database is down before any request has waited for it."""

    class PoolConnection(AsyncConnection[DictRow]):
        @classmethod
        async def connect(cls, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super().connect(*args, **kwargs)
            except psycopg.OperationalError as exc:
                db._connect_failed(exc)
                raise

    return PoolConnection


__all__ = ["Conn", "Database", "IsolationLevel", "StoreUnavailable"]
