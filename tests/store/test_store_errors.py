"""psycopg's errors stop at the store: losing the database is ``StoreUnavailable`` (code ``database_unavailable``, HTTP
503), a unique constraint ``StoreConflict`` (naming the constraint), any other failure ``StoreError``; the
driver's exception stays the cause."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import psycopg
import pytest
from structlog.testing import capture_logs

from prebuildd.domain.errors import ErrorCode
from prebuildd.store.db import FAST_FAIL, Database
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


async def test_a_pool_that_knows_the_database_is_down_fails_fast_and_says_so_once() -> None:
    db = Database(f"postgresql://prebuildd@127.0.0.1:{_closed_port()}/none", min_size=1, timeout=2.0)
    await db.pool.open(wait=False)
    try:
        with capture_logs() as logs:
            causes = []
            for _ in range(3):
                with pytest.raises(StoreUnavailable) as err:
                    async with db.autocommit():
                        pass
                assert err.value.code is ErrorCode.DATABASE_UNAVAILABLE
                causes.append(str(err.value.__cause__))
        assert db.down
        # The first request waited the configured timeout; once the pool knew, the others waited only FAST_FAIL.
        assert causes[0].endswith(f"after {2.0:.2f} sec")
        assert all(cause.endswith(f"after {FAST_FAIL:.2f} sec") for cause in causes[1:]), causes
        assert [e["component"] for e in logs if e["event"] == "component.unavailable"] == ["db-pool"]
    finally:
        await db.close()


async def test_idle_connections_are_checked_once_when_an_outage_is_suspected(db: Database) -> None:
    async with db.autocommit() as conn:
        await conn.execute("SELECT 1")
    killer = await db.connect()
    try:  # what a restart of PostgreSQL does to the pool's idle connections
        await killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await killer.close()
    db.suspect()  # the listener does this when its connection breaks
    for _ in range(3):
        async with db.transaction() as conn:
            assert (await (await conn.execute("SELECT 1 AS one")).fetchone() or {})["one"] == 1
