"""Row helpers of the store's repositories: run a named query, get dict rows, tuples or dataclasses back.

A psycopg error becomes the store's own (``store.errors``) here, per statement. Private to ``prebuildd.store`` (an import contract says so): code outside the store calls a repository function
that takes and returns typed values, never a query name, a parameter dict or a row dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

import psycopg
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from prebuildd.store.db import Conn
from prebuildd.store.errors import store_error
from prebuildd.store.sql import q

T = TypeVar("T")
Row = dict[str, Any]
Params = Mapping[str, Any]


async def fetch_one(
    conn: Conn, query: str, params: Params | None = None, *, prepare: bool | None = None
) -> Row | None:
    """One row or None; ``prepare=True`` prepares the statement on its first run on a connection (hot paths:
    psycopg otherwise waits for its fifth)."""
    try:
        cur = await conn.execute(q(query), params, prepare=prepare)
        return await cur.fetchone()
    except psycopg.Error as exc:
        raise store_error(exc, broken=conn.broken) from exc


async def fetch_all(conn: Conn, query: str, params: Params | None = None) -> list[Row]:
    try:
        cur = await conn.execute(q(query), params)
        return await cur.fetchall()
    except psycopg.Error as exc:
        raise store_error(exc, broken=conn.broken) from exc


async def fetch_all_as(conn: Conn, query: str, params: Params | None, cls: Callable[..., T]) -> list[T]:
    """Rows built positionally into ``cls``, the fastest way to many objects: the query's columns must be
    the dataclass's fields, in order (checked on every call against the result's description)."""
    async with conn.cursor(row_factory=tuple_row, binary=True) as cur:
        try:
            await cur.execute(q(query), params)
        except psycopg.Error as exc:
            raise store_error(exc, broken=conn.broken) from exc
        names = tuple(col.name for col in cur.description or ())
        expected = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        if names != expected[: len(names)]:
            raise RuntimeError(f"{query} returns {names}, expected the fields of {cls.__name__}: {expected}")
        return [cls(*row) for row in await cur.fetchall()]


async def fetch_tuples(conn: Conn, query: str, params: Params | None = None) -> list[tuple[Any, ...]]:
    """Rows as tuples over the binary protocol (a hot path building objects positionally)."""
    async with conn.cursor(row_factory=tuple_row, binary=True) as cur:
        try:
            await cur.execute(q(query), params)
        except psycopg.Error as exc:
            raise store_error(exc, broken=conn.broken) from exc
        return await cur.fetchall()


async def fetch_val(conn: Conn, query: str, params: Params | None = None) -> Any:
    row = await fetch_one(conn, query, params)
    return None if row is None else next(iter(row.values()))


async def execute(
    conn: Conn, query: str, params: Params | None = None, *, prepare: bool | None = None
) -> int:
    try:
        cur = await conn.execute(q(query), params, prepare=prepare)
    except psycopg.Error as exc:
        raise store_error(exc, broken=conn.broken) from exc
    return cur.rowcount


def jsonb(value: Any) -> Jsonb:
    return Jsonb(value)
