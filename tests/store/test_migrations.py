"""Migrations: from empty, idempotent, safe when two processes start together, and fresh == stepwise."""

from __future__ import annotations

import asyncio
import subprocess

import psycopg

from prebuildd.runtime.clock import FakeClock
from prebuildd.store.db import Database
from prebuildd.store.migrate import available_migrations, migrate, pending_migrations
from tests.support.pg import PgServer


def _empty_db(pg_server: PgServer) -> str:
    name = pg_server.create_database(template="template0")
    return pg_server.url(name)


def _schema_dump(pg_server: PgServer, url: str) -> str:
    out = subprocess.run(
        [str(pg_server.embedded.bin("pg_dump")), "--schema-only", "--no-owner", "--no-privileges", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return "\n".join(
        line for line in out.splitlines() if not line.startswith(("--", "\\restrict", "\\unrestrict"))
    )


async def _migrate(url: str, target: int | None = None) -> list[int]:
    conn = await Database(url).connect()
    try:
        return await migrate(conn, FakeClock().now(), target=target)
    finally:
        await conn.close()


async def test_migrates_an_empty_database_and_is_idempotent(pg_server: PgServer) -> None:
    url = _empty_db(pg_server)
    versions = [m.version for m in available_migrations()]
    assert await _migrate(url) == versions
    assert await _migrate(url) == []
    conn = await Database(url).connect()
    try:
        assert await pending_migrations(conn) == []
    finally:
        await conn.close()


async def test_two_processes_migrating_at_once_apply_each_migration_once(pg_server: PgServer) -> None:
    url = _empty_db(pg_server)
    first, second = await asyncio.gather(_migrate(url), _migrate(url))
    assert sorted(first + second) == [m.version for m in available_migrations()]
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [m.version for m in available_migrations()]


async def test_a_database_upgraded_step_by_step_equals_a_fresh_one(pg_server: PgServer) -> None:
    fresh = _empty_db(pg_server)
    await _migrate(fresh)
    stepwise = _empty_db(pg_server)
    for migration in available_migrations():
        assert await _migrate(stepwise, target=migration.version) == [migration.version]
    assert _schema_dump(pg_server, stepwise) == _schema_dump(pg_server, fresh)
    # and the test template every other test clones is that same schema
    assert _schema_dump(pg_server, pg_server.url("prebuildd_template")) == _schema_dump(pg_server, fresh)
