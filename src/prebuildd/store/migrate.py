"""Schema migrations: numbered `.sql` files applied in order at start, under an advisory lock.

Two processes starting together both call ``migrate``; the lock makes the second wait and then find nothing to
do. Each migration runs in its own transaction together with its bookkeeping row, so a crash leaves the schema at
a whole version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

from prebuildd.store.db import Conn
from prebuildd.store.rows import execute, fetch_all

MIGRATION_LOCK = 0x70726562  # "preb": one constant for every prebuildd process
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("prebuildd.store").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration files must be numbered 1..n without gaps, found {versions}")
    return found


async def migrate(conn: Conn, now: datetime, *, target: int | None = None) -> list[int]:
    """Apply pending migrations up to ``target`` (all by default) on ``conn`` (autocommit); returns versions applied."""
    await execute(conn, "migrations.lock", {"lock": MIGRATION_LOCK})
    try:
        await execute(conn, "migrations.create_table")
        done = {row["version"] for row in await fetch_all(conn, "migrations.applied")}
        applied = []
        for migration in available_migrations():
            if migration.version in done or (target is not None and migration.version > target):
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await execute(
                    conn,
                    "migrations.record",
                    {"version": migration.version, "name": migration.name, "now": now},
                )
            applied.append(migration.version)
        return applied
    finally:
        await execute(conn, "migrations.unlock", {"lock": MIGRATION_LOCK})


async def pending_migrations(conn: Conn) -> list[int]:
    done = {row["version"] for row in await fetch_all(conn, "migrations.applied")}
    return [m.version for m in available_migrations() if m.version not in done]
