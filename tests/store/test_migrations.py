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


async def test_upgrading_to_tenancy_keeps_every_role_in_the_default_organization(pg_server: PgServer) -> None:
    """0008: site-wide roles become memberships with the same role, the first owner becomes the site owner."""
    url = _empty_db(pg_server)
    await _migrate(url, target=7)
    default, other = "10000000-0000-4000-8000-000000000001", "10000000-0000-4000-8000-000000000002"
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO organizations (id, name, is_default, created_at) VALUES "
            "(%s, 'default', true, '2026-01-01'), (%s, 'other', false, '2026-01-01')",
            (default, other),
        )
        for name, role, day in [
            ("second-owner", "owner", "2026-01-03"),
            ("admin", "owner", "2026-01-02"),
            ("tadmin", "template-admin", "2026-01-04"),
            ("alice", "member", "2026-01-05"),
            ("loner", "template-admin", "2026-01-06"),
        ]:
            conn.execute(
                "INSERT INTO users (id, username, role, created_at, updated_at) "
                "VALUES (gen_random_uuid(), %s, %s, %s, %s)",
                (name, role, day, day),
            )
        conn.execute(
            "INSERT INTO organization_members (organization_id, user_id, created_at) "
            "SELECT %s, id, created_at FROM users WHERE NOT is_system AND username <> 'loner'",
            (default,),
        )
        # made by hand in another organization: keeps its role there, and gains nothing in the default one
        conn.execute(
            "INSERT INTO organization_members (organization_id, user_id, created_at) "
            "SELECT %s, id, created_at FROM users WHERE username = 'tadmin'",
            (other,),
        )
    assert await _migrate(url, target=8) == [8]
    with psycopg.connect(url) as conn:
        members = conn.execute(
            "SELECT o.name, u.username, m.role FROM organization_members m "
            "JOIN users u ON u.id = m.user_id JOIN organizations o ON o.id = m.organization_id "
            "ORDER BY o.name, u.username"
        ).fetchall()
        site_owners = conn.execute("SELECT username FROM users WHERE site_owner").fetchall()
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'"
        ).fetchall()
    assert members == [
        ("default", "admin", "owner"),
        ("default", "alice", "member"),
        ("default", "loner", "template-admin"),  # in no organization before: joins the default one
        ("default", "second-owner", "owner"),
        ("default", "tadmin", "template-admin"),
        ("other", "tadmin", "template-admin"),
    ]
    assert site_owners == [("admin",)]  # the oldest owner, not the first inserted
    assert "role" not in {c[0] for c in columns}
