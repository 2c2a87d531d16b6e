"""Schema migrations: numbered `.sql` files applied in order at start, under an advisory lock.

Two processes starting together both call ``migrate``; the lock makes the second wait and then find nothing to
do. Each migration runs in its own transaction together with its bookkeeping row, so a crash leaves the schema at
a whole version. Migrations are forward-only: a database holding migrations this code does not know (a newer
prebuildd migrated it) is refused with :class:`SchemaNewerThanCode`, never changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

from prebuildd.store.db import Conn
from prebuildd.store.rows import execute, fetch_all, fetch_one

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


class SchemaNewerThanCode(RuntimeError):
    """The database has migrations this prebuildd does not know: a newer version migrated it."""

    def __init__(self, unknown: list[int], known: int) -> None:
        super().__init__(
            f"the database schema has migrations {unknown} that this prebuildd does not know (it knows 1..{known}): "
            "a newer prebuildd migrated it"
        )
        self.unknown = unknown
        self.known = known


@dataclass(frozen=True)
class SchemaState:
    """What a database holds against the migrations this code ships."""

    applied: list[int]
    pending: list[int]
    """Known to this code, not applied yet."""
    unknown: list[int]
    """Applied, not known to this code (a newer prebuildd's)."""

    @property
    def version(self) -> int:
        """The highest migration applied (0: none)."""
        return max(self.applied, default=0)

    @property
    def latest(self) -> int:
        """The highest migration this code knows."""
        return len(available_migrations())


async def schema_state(conn: Conn) -> SchemaState:
    row = await fetch_one(conn, "migrations.table_present")
    applied = (
        [r["version"] for r in await fetch_all(conn, "migrations.applied")] if row and row["present"] else []
    )
    known = {m.version for m in available_migrations()}
    return SchemaState(
        applied=applied,
        pending=sorted(known - set(applied)),
        unknown=sorted(set(applied) - known),
    )


async def migrate(conn: Conn, now: datetime, *, target: int | None = None) -> list[int]:
    """Apply pending migrations up to ``target`` (all by default) on ``conn`` (autocommit); returns versions applied.
    Raises :class:`SchemaNewerThanCode`, changing nothing, when the database has migrations this code does not
    know."""
    await execute(conn, "migrations.lock", {"lock": MIGRATION_LOCK})
    try:
        await execute(conn, "migrations.create_table")
        done = {row["version"] for row in await fetch_all(conn, "migrations.applied")}
        known = available_migrations()
        unknown = sorted(done - {m.version for m in known})
        if unknown:
            raise SchemaNewerThanCode(unknown, len(known))
        applied = []
        for migration in known:
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
    return (await schema_state(conn)).pending
