"""The connection pool and the few ways code borrows a connection from it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import fields
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, IsolationLevel
from psycopg.rows import DictRow, dict_row, tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from prebuildd.store.sql import q

Conn = AsyncConnection[DictRow]
T = TypeVar("T")
Row = dict[str, Any]
Params = Mapping[str, Any]


async def _configure(conn: Conn) -> None:
    # Every timestamp is passed in as a parameter; pin the session time zone so that what we read back
    # compares equal to what the clock produced.
    await conn.execute("SET TIME ZONE 'UTC'")
    await conn.commit()


class Database:
    """An async pool of dict-row connections to one PostgreSQL database."""

    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 20, name: str = "prebuildd") -> None:
        self.url = url
        self.pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            url,
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
        async with self.pool.connection() as conn:
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
        async with self.pool.connection() as conn:
            await conn.set_autocommit(True)
            try:
                yield conn
            finally:
                if not conn.closed:
                    await conn.set_autocommit(False)

    async def connect(self) -> Conn:
        """A dedicated connection outside the pool (for LISTEN and session locks); the caller closes it."""
        conn = await AsyncConnection.connect(self.url, row_factory=dict_row, autocommit=True)
        await conn.execute("SET TIME ZONE 'UTC'")
        return conn


async def fetch_one(conn: Conn, query: str, params: Params | None = None) -> Row | None:
    cur = await conn.execute(q(query), params)
    return await cur.fetchone()


async def fetch_all(conn: Conn, query: str, params: Params | None = None) -> list[Row]:
    cur = await conn.execute(q(query), params)
    return await cur.fetchall()


async def fetch_all_as(conn: Conn, query: str, params: Params | None, cls: Callable[..., T]) -> list[T]:
    """Rows built positionally into ``cls``, the fastest way to many objects: the query's columns must be
    the dataclass's fields, in order (checked on every call against the result's description)."""
    async with conn.cursor(row_factory=tuple_row, binary=True) as cur:
        await cur.execute(q(query), params)
        names = tuple(col.name for col in cur.description or ())
        expected = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        if names != expected[: len(names)]:
            raise RuntimeError(f"{query} returns {names}, expected the fields of {cls.__name__}: {expected}")
        return [cls(*row) for row in await cur.fetchall()]


async def fetch_val(conn: Conn, query: str, params: Params | None = None) -> Any:
    row = await fetch_one(conn, query, params)
    return None if row is None else next(iter(row.values()))


async def execute(conn: Conn, query: str, params: Params | None = None) -> int:
    cur = await conn.execute(q(query), params)
    return cur.rowcount


def jsonb(value: Any) -> Jsonb:
    return Jsonb(value)


__all__ = ["Conn", "Database", "Row", "execute", "fetch_all", "fetch_one", "fetch_val", "jsonb", "psycopg"]
