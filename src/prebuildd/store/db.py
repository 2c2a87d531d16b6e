"""The connection pool and the few ways code borrows a connection from it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg import AsyncConnection, IsolationLevel
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from prebuildd.store.errors import StoreUnavailable, store_error
from prebuildd.store.sql import q

Conn = AsyncConnection[DictRow]


@asynccontextmanager
async def _borrowed(pool: AsyncConnectionPool[Conn]) -> AsyncIterator[Conn]:
    """A pooled connection; losing the database becomes ``StoreUnavailable`` here, at the store's boundary, so
    that callers see one project error and not psycopg's (a query's own errors pass through unchanged)."""
    try:
        async with pool.connection() as conn:
            try:
                yield conn
            except psycopg.Error as exc:  # at commit, or from a statement run outside the row helpers
                raise store_error(exc, broken=conn.broken) from exc
    except PoolTimeout as exc:
        raise StoreUnavailable(exc) from exc


async def _configure(conn: Conn) -> None:
    await conn.execute(q("connection.set_utc"))
    await conn.commit()


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
    ) -> None:
        self.url = url
        self.pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            url,
            timeout=timeout,
            min_size=min_size,
            max_size=max_size,
            open=False,
            name=name,
            kwargs={"row_factory": dict_row, "autocommit": False},
            configure=_configure,
            connection_class=AsyncConnection[DictRow],
        )

    async def open(self) -> Database:
        await self.pool.open(wait=True, timeout=30)
        return self

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def transaction(
        self, *, isolation: IsolationLevel | None = None, readonly: bool = False
    ) -> AsyncIterator[Conn]:
        """A connection inside one transaction, committed on success and rolled back on error."""
        async with _borrowed(self.pool) as conn:
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
        async with _borrowed(self.pool) as conn:
            await conn.set_autocommit(True)
            try:
                yield conn
            finally:
                if not conn.closed:
                    await conn.set_autocommit(False)

    async def connect(self) -> Conn:
        """A dedicated connection outside the pool (for LISTEN and session locks); the caller closes it."""
        try:
            conn = await AsyncConnection.connect(self.url, row_factory=dict_row, autocommit=True)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(exc) from exc
        await conn.execute(q("connection.set_utc"))
        return conn


__all__ = ["Conn", "Database", "IsolationLevel", "StoreUnavailable"]
