"""The schema at start and on purpose: what `prebuildd server` does with pending migrations (apply them, or with
``--no-migrate`` refuse to start), and `prebuildd db migrate|status` against ``--postgres-url`` or the embedded
database of ``--data-dir``.

Upgrade policy (docs/configuration.md, "Upgrades"): migrations are forward-only. A server never starts on a schema
newer than it knows (reason ``schema_newer``): once version N has migrated, an N−1 replica that restarts is
refused, while N−1 replicas already running keep serving until they are replaced (a rolling upgrade), which holds
because a release's migrations only add to the schema. Going back means restoring the backup taken before.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from prebuildd.runtime.clock import Clock, SystemClock
from prebuildd.runtime.config import ServerConfig
from prebuildd.server.embedded_pg import EmbeddedPostgres
from prebuildd.server.startup import StartupError, check_data_dir, check_database
from prebuildd.store.db import Conn, Database
from prebuildd.store.migrate import SchemaNewerThanCode, SchemaState, migrate, schema_state

log = structlog.get_logger(__name__)

MIGRATE_HINT = "run `prebuildd db migrate` with the same --postgres-url or --config"


def _newer(exc: SchemaNewerThanCode) -> StartupError:
    return StartupError(
        "schema_newer",
        str(exc),
        "run the prebuildd version that migrated it (migrations are forward-only; to go back, restore the "
        "backup taken before the upgrade)",
    )


async def prepare_schema(conn: Conn, clock: Clock, *, apply: bool) -> list[int]:
    """At server start: apply pending migrations (``apply``), or refuse to start when any are pending; always
    refuse a schema newer than this code. Returns the versions applied."""
    if apply:
        try:
            return await migrate(conn, clock.now())
        except SchemaNewerThanCode as exc:
            raise _newer(exc) from None
    state = await schema_state(conn)
    if state.unknown:
        raise _newer(SchemaNewerThanCode(state.unknown, state.latest))
    if state.pending:
        at = f"at version {state.version}" if state.applied else "empty (no prebuildd schema yet)"
        raise StartupError(
            "schema_outdated",
            f"--no-migrate: the database schema is {at}, this prebuildd needs version {state.latest} "
            f"(migrations {state.pending} pending)",
            MIGRATE_HINT + ", or start without --no-migrate",
        )
    return []


@dataclass(frozen=True)
class MigrationReport:
    before: SchemaState
    applied: list[int]
    after: SchemaState


@asynccontextmanager
async def _connection(config: ServerConfig) -> AsyncIterator[Conn]:
    """A dedicated connection to the configured database; the embedded one is started for it (and stopped
    after, unless a running server already had it up)."""
    embedded: EmbeddedPostgres | None = None
    url = config.postgres_url
    if url is None:
        check_data_dir(config.data_dir)
        embedded = EmbeddedPostgres(config.data_dir)
        try:
            url = await asyncio.to_thread(embedded.start)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            raise StartupError(
                "embedded_postgres_failed",
                f"the embedded PostgreSQL in {config.data_dir} did not start: {exc}",
                f"see {config.data_dir / 'postgres.log'}, or give --postgres-url",
            ) from None
    try:
        await check_database(url, config.database_wait)
        db = Database(url, min_size=1, max_size=1, timeout=config.db_timeout)
        conn = await db.connect()
        try:
            yield conn
        finally:
            await conn.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def migrate_database(config: ServerConfig, clock: Clock | None = None) -> MigrationReport:
    """`prebuildd db migrate`: apply every pending migration (under the migration lock, so it is safe beside
    running servers); a schema newer than this code is a StartupError (``schema_newer``), left unchanged."""
    async with _connection(config) as conn:
        before = await schema_state(conn)
        try:
            applied = await migrate(conn, (clock or SystemClock()).now())
        except SchemaNewerThanCode as exc:
            raise _newer(exc) from None
        after = await schema_state(conn)
    if applied:
        log.info("db.migrated", versions=applied, version=after.version)
    return MigrationReport(before, applied, after)


async def database_schema(config: ServerConfig) -> SchemaState:
    """`prebuildd db status`: the schema of the configured database against this code's migrations."""
    async with _connection(config) as conn:
        return await schema_state(conn)
