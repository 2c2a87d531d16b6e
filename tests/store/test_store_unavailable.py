"""Losing the database is one project error, ``StoreUnavailable`` (code ``unavailable``, HTTP 503), raised at the
store's boundary; a query's own errors pass through as they are."""

from __future__ import annotations

import socket

import psycopg
import pytest

from prebuildd.domain.errors import ErrorCode
from prebuildd.store.db import Database, StoreUnavailable


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


async def test_no_connection_within_the_pool_timeout_is_unavailable() -> None:
    db = Database(f"postgresql://prebuildd@127.0.0.1:{_closed_port()}/none", min_size=1, timeout=0.5)
    await db.pool.open(wait=False)
    try:
        with pytest.raises(StoreUnavailable) as err:
            async with db.transaction():
                pass
        assert err.value.code is ErrorCode.UNAVAILABLE and err.value.status == 503
        assert "retry" in err.value.message
    finally:
        await db.close()


async def test_a_connection_that_breaks_mid_transaction_is_unavailable(db: Database) -> None:
    killer = await db.connect()
    try:
        with pytest.raises(StoreUnavailable) as err:
            async with db.transaction() as conn:
                pid = (await (await conn.execute("SELECT pg_backend_pid() AS pid")).fetchone() or {})["pid"]
                await killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
                await conn.execute("SELECT 1")
        assert isinstance(err.value.__cause__, psycopg.OperationalError)
    finally:
        await killer.close()
    async with db.transaction() as conn:  # the pool replaced the broken connection
        assert (await (await conn.execute("SELECT 1 AS one")).fetchone() or {})["one"] == 1


async def test_query_errors_are_not_unavailability(db: Database) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable):
        async with db.transaction() as conn:
            await conn.execute("SELECT * FROM no_such_table")
