"""Test harness: one embedded PostgreSQL per session, a migrated template database, a clone per test."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from prebuildd.runtime.clock import FakeClock
from prebuildd.server.embedded_pg import EmbeddedPostgres
from prebuildd.store.db import Database
from prebuildd.store.migrate import migrate
from tests.support.env import Env, daemon_for
from tests.support.pg import TEMPLATE_DB, PgServer


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    given = os.environ.get("PREBUILDD_TEST_PGDIR")
    root = Path(given or tempfile.mkdtemp(prefix="prebuildd-test-pg-"))
    embedded = EmbeddedPostgres(
        root,
        settings={
            "max_connections": "300",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        },
    )
    admin_url = embedded.start()
    server = PgServer(embedded, admin_url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')  # type: ignore[arg-type]

    async def _migrate() -> None:
        db = Database(server.url(TEMPLATE_DB))
        conn = await db.connect()
        try:
            await migrate(conn, FakeClock().now())
        finally:
            await conn.close()

    asyncio.run(_migrate())
    try:
        yield server
    finally:
        embedded.stop()
        if not given:  # a directory of our own: each run left ~150 MB of cluster behind
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database_url(pg_server: PgServer) -> Iterator[str]:
    name = pg_server.create_database()
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database(database_url, min_size=1, max_size=30).open()
    yield database
    await database.close()


@pytest.fixture
async def env(db: Database, clock: FakeClock, tmp_path: Path) -> Env:
    from prebuildd.identity.users import create_user, ensure_default_organization
    from prebuildd.queue.pg import PgJobQueue
    from prebuildd.workspaces.builder import WorkspaceBuilder

    org = await ensure_default_organization(db, clock)
    owner = await create_user(db, clock, username="admin", role="owner", site_owner=True)
    member = await create_user(db, clock, username="alice")
    queue = PgJobQueue(db, clock)
    work = tmp_path / "work"
    work.mkdir()
    return Env(
        db=db,
        clock=clock,
        org_id=org.id,
        owner_id=owner.id,
        member_id=member.id,
        builder=WorkspaceBuilder(clock),
        queue=queue,
        daemon=daemon_for(queue, work),
        tmp=tmp_path,
    )
