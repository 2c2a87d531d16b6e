"""psycopg's errors stop at the store: losing the database is ``StoreUnavailable`` (code ``database_unavailable``, HTTP
503), a unique constraint ``StoreConflict`` (naming the constraint), any other failure ``StoreError``; the
driver's exception stays the cause."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import psycopg
import pytest

from prebuildd.domain.errors import ErrorCode
from prebuildd.store.db import Database
from prebuildd.store.errors import StoreConflict, StoreError, StoreUnavailable
from prebuildd.store.rows import execute


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
        assert err.value.code is ErrorCode.DATABASE_UNAVAILABLE and err.value.status == 503
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


async def test_other_failures_are_store_errors_not_unavailability(db: Database) -> None:
    with pytest.raises(StoreError) as err:
        async with db.transaction() as conn:
            await conn.execute("SELECT * FROM no_such_table")
    assert not isinstance(err.value, StoreUnavailable) and err.value.code is ErrorCode.INTERNAL
    assert isinstance(err.value.__cause__, psycopg.errors.UndefinedTable)


async def test_a_unique_violation_is_a_conflict_naming_its_constraint(db: Database) -> None:
    record = {"version": 999, "name": "twice", "now": datetime(2026, 1, 1, tzinfo=UTC)}
    with pytest.raises(StoreConflict) as err:
        async with db.transaction() as conn:
            await execute(conn, "migrations.record", record)
            await execute(conn, "migrations.record", record)
    assert err.value.constraint == "schema_migrations_pkey"
    assert err.value.code is ErrorCode.CONFLICT and err.value.status == 409
    assert isinstance(err.value.__cause__, psycopg.errors.UniqueViolation)
