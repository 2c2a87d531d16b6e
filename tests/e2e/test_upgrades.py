"""Upgrades: `prebuildd server --no-migrate` refuses an older schema with one line and exit 1, `prebuildd db migrate`
upgrades it on purpose, and the mixed-version policy: a schema newer than the code is refused at start (and left
alone), while a replica already running when a newer version migrates keeps serving."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from prebuildd.runtime.clock import FakeClock
from prebuildd.server.startup import StartupError
from prebuildd.store.db import Database
from prebuildd.store.migrate import available_migrations, migrate
from tests.support.api import API, push, wait_build, wait_imported
from tests.support.pg import PgServer
from tests.support.processes import processes_in
from tests.support.served import served
from tests.support.server import start_server

TIMEOUT = 90.0
LATEST = len(available_migrations())


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.err.splitlines()]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PREBUILDD_")}


async def _prebuildd(*args: str) -> Ran:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "prebuildd",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


def _server_args(url: str, data_dir: Path, *more: str) -> list[str]:
    return [
        "server",
        "--postgres-url",
        url,
        "--data-dir",
        str(data_dir),
        "--log-format",
        "json",
        "--provisioner-daemons",
        "0",
        "--http-address",
        "127.0.0.1:0",
        *more,
    ]


async def _serves(url: str, data_dir: Path, *more: str) -> None:
    """`prebuildd server` starts for real (it listens and is ready), then stops on SIGTERM."""
    argv = [sys.executable, "-m", "prebuildd", *_server_args(url, data_dir, *more)]
    async with (
        served(argv, _env(), timeout=TIMEOUT) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        assert (await client.get("/readyz")).status_code == 200


@pytest.fixture
def empty_database(pg_server: PgServer) -> Iterator[str]:
    """A database prebuildd has never migrated."""
    name = pg_server.create_database(template="template0")
    yield pg_server.url(name)
    pg_server.drop_database(name)


async def _migrate_to(url: str, target: int) -> None:
    conn = await Database(url).connect()
    try:
        await migrate(conn, FakeClock().now(), target=target)
    finally:
        await conn.close()


def _applied(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def _future_migration(url: str) -> None:
    """What a newer prebuildd's start does: an additive migration and its bookkeeping row."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE workspaces ADD COLUMN future_note text")
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, 'future_note', now())",
            (LATEST + 1,),
        )


async def test_no_migrate_refuses_an_old_schema_then_db_migrate_upgrades_it(
    empty_database: str, tmp_path: Path
) -> None:
    url = empty_database
    await _migrate_to(url, LATEST - 1)  # the schema of the previous version

    refused = await _prebuildd(*_server_args(url, tmp_path / "a", "--no-migrate"))
    assert refused.code == 1, refused
    assert "Traceback" not in refused.err
    errors = [e for e in refused.events() if e["level"] in ("error", "critical")]
    assert [(e["event"], e["reason"]) for e in errors] == [("server.start_failed", "schema_outdated")], (
        refused.err
    )
    assert f"version {LATEST - 1}" in errors[0]["error"] and f"[{LATEST}] pending" in errors[0]["error"]
    assert "prebuildd db migrate" in errors[0]["hint"]
    assert _applied(url) == list(range(1, LATEST))  # refused, and nothing changed

    status = await _prebuildd("db", "status", "--postgres-url", url)
    assert status.code == 1 and f"pending migrations: {LATEST}" in status.out, status

    upgraded = await _prebuildd("db", "migrate", "--postgres-url", url)
    assert upgraded.code == 0, upgraded
    assert upgraded.out.strip() == (
        f"applied migrations {LATEST}: the schema is at version {LATEST} (was {LATEST - 1})"
    )
    assert _applied(url) == list(range(1, LATEST + 1))
    again = await _prebuildd("db", "migrate", "--postgres-url", url)
    assert again.code == 0 and again.out.startswith("nothing to do"), again
    status = await _prebuildd("db", "status", "--postgres-url", url)
    assert status.code == 0 and "up to date" in status.out, status

    await _serves(url, tmp_path / "a", "--no-migrate")


async def test_db_migrate_reads_the_database_from_the_config_file(
    empty_database: str, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'postgres_url = "{empty_database}"\n')
    ran = await _prebuildd("db", "migrate", "--config", str(config))
    assert ran.code == 0, ran
    assert ran.out.startswith(f"applied migrations {', '.join(map(str, range(1, LATEST + 1)))}")


async def test_db_migrate_on_the_embedded_database_leaves_it_stopped() -> None:
    # Outside pytest's tmp tree: as root PostgreSQL runs as another user, who must traverse it.
    data_dir = Path(tempfile.mkdtemp(prefix="prebuildd-dbmigrate-"))
    try:
        ran = await _prebuildd("db", "migrate", "--data-dir", str(data_dir))
        assert ran.code == 0, ran
        assert ran.out.startswith("applied migrations 1, ")
        assert processes_in(data_dir / "postgres") == []
        status = await _prebuildd("db", "status", "--data-dir", str(data_dir))
        assert status.code == 0 and "up to date" in status.out, status
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_no_migrate_refuses_a_database_without_a_schema(empty_database: str, tmp_path: Path) -> None:
    with pytest.raises(StartupError) as refused:
        await start_server(empty_database, tmp_path / "a", migrate=False)
    assert refused.value.reason == "schema_outdated"
    assert "no prebuildd schema yet" in refused.value.message
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)


@pytest.mark.parametrize("apply", [True, False])
async def test_a_schema_newer_than_the_code_is_refused_and_left_alone(
    database_url: str, tmp_path: Path, apply: bool
) -> None:
    _future_migration(database_url)
    with pytest.raises(StartupError) as refused:
        await start_server(database_url, tmp_path / "a", migrate=apply)
    assert refused.value.reason == "schema_newer"
    assert f"[{LATEST + 1}]" in refused.value.message
    assert _applied(database_url) == list(range(1, LATEST + 2))

    ran = await _prebuildd("db", "migrate", "--postgres-url", database_url)
    assert ran.code == 1 and f"[{LATEST + 1}]" in ran.err and "forward-only" in ran.err, ran
    assert _applied(database_url) == list(range(1, LATEST + 2))


async def test_a_running_replica_keeps_serving_after_a_newer_version_migrates(
    database_url: str, tmp_path: Path
) -> None:
    running = await start_server(database_url, tmp_path / "old", reconcile_interval=3600.0)
    try:
        async with running.client() as client:
            assert (await push(client, tmp_path, "echo", 'provisioner = "echo"\n')).status_code == 201
            assert (await wait_imported(client, "echo", "v1"))["import_status"] == "succeeded"

            _future_migration(database_url)  # a newer replica started on the same database

            assert (await client.get("/readyz")).status_code == 200
            created = await client.post(f"{API}/workspaces", json={"name": "after", "template": "echo"})
            assert created.status_code == 201, created.text
            built = await wait_build(client, created.json()["id"], 1)
            assert built["status"] == "succeeded", built
        # The same old version restarting is refused: only the newer one may start from here on.
        with pytest.raises(StartupError) as refused:
            await start_server(database_url, tmp_path / "restarted")
        assert refused.value.reason == "schema_newer"
    finally:
        await running.server.stop()
