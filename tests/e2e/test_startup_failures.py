"""Clean startup failures: a port in use, an unreachable or misconfigured database and an unwritable
data directory each end `prebuildd server` with one `server.start_failed` line, a non-zero exit, no traceback,
no PostgreSQL left running and no owner token written; the next start, once fixed, works."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest

from prebuildd.runtime.identities import hold_replica_id
from prebuildd.server.process import OWNER_TOKEN_FILE
from tests.support.pg import PgServer
from tests.support.processes import process_gone
from tests.support.served import served
from tests.support.waiting import wait_for

SERVER_TIMEOUT = 90.0


@dataclass
class Exited:
    code: int
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr.splitlines() if line.startswith("{")]

    def the_failure(self) -> dict[str, Any]:
        """The one error line: `server.start_failed`, and nothing else at error level or as a traceback."""
        assert "Traceback" not in self.stderr, self.stderr
        assert all(line.startswith("{") for line in self.stderr.splitlines()), self.stderr
        errors = [e for e in self.events if e["level"] in ("error", "critical")]
        assert [e["event"] for e in errors] == ["server.start_failed"], self.stderr
        return errors[0]


def _env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("PREBUILDD_")}


def _args(data_dir: Path, *more: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "prebuildd",
        "server",
        "--data-dir",
        str(data_dir),
        "--log-format",
        "json",
        *more,
    ]


async def run_server(data_dir: Path, *args: str) -> Exited:
    """`prebuildd server` expected to fail: its exit code and stderr."""
    process = await asyncio.create_subprocess_exec(
        *_args(data_dir, "--provisioner-daemons", "0", *args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    try:
        _, err = await asyncio.wait_for(process.communicate(), SERVER_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Exited(process.returncode, err.decode())


async def serve_then_stop(data_dir: Path, *args: str) -> str:
    """Start `prebuildd server` for real, wait until it listens, log in with its owner token, stop it."""
    argv = _args(data_dir, "--provisioner-daemons", "0", "--http-address", "127.0.0.1:0", *args)
    async with served(argv, _env(), timeout=SERVER_TIMEOUT) as url:
        token_file = data_dir / OWNER_TOKEN_FILE
        await wait_for(token_file.exists, what="the owner token file")
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            me = await client.get(
                "/api/v1/users/me", headers={"Authorization": f"Bearer {token_file.read_text().strip()}"}
            )
        assert me.status_code == 200, me.text
        return str(me.json()["username"])


def _postgres_processes(pgdata: Path) -> list[int]:
    """PostgreSQL processes serving ``pgdata`` (by their command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(pgdata).encode() in cmdline and not process_gone(int(entry.name)):
            found.append(int(entry.name))
    return found


def assert_no_postgres_left(data_dir: Path) -> None:
    pgdata = data_dir / "postgres"
    assert (pgdata / "PG_VERSION").exists()  # it was started: this test would be empty otherwise
    assert not (pgdata / "postmaster.pid").exists()
    assert _postgres_processes(pgdata) == []


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port nothing listens on (bound, never listening, so nobody else takes it meanwhile)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def _with(url: str, *, password: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if password is not None:
        user, rest = netloc.split("@", 1)
        netloc = f"{user.split(':', 1)[0]}:{password}@{rest}"
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


def _users(database_url: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        return [row[0] for row in conn.execute("SELECT username FROM users WHERE NOT is_system")]


# -- the port is in use ------------------------------------------------------------------------------------


async def test_a_port_in_use_with_the_embedded_postgres_stops_it_and_writes_no_token(
    tmp_path: Path, busy_port: int
) -> None:
    data_dir = tmp_path / "data"
    exited = await run_server(data_dir, "--http-address", f"127.0.0.1:{busy_port}")
    assert exited.code != 0
    failure = exited.the_failure()
    assert failure["reason"] == "port_in_use"
    assert failure["error"] == f"cannot listen on 127.0.0.1:{busy_port}: the address is already in use"
    assert "--http-address" in failure["hint"]
    assert_no_postgres_left(data_dir)
    assert not (data_dir / OWNER_TOKEN_FILE).exists()

    # Fixed, the next start is a first start again: it creates the owner and hands out their token.
    assert await serve_then_stop(data_dir) == "admin"
    assert_no_postgres_left(data_dir)


async def test_a_port_in_use_on_a_shared_database_leaves_no_owner_behind(
    tmp_path: Path, busy_port: int, database_url: str
) -> None:
    data_dir = tmp_path / "data"
    exited = await run_server(
        data_dir, "--postgres-url", database_url, "--http-address", f"127.0.0.1:{busy_port}"
    )
    assert exited.code != 0
    assert exited.the_failure()["reason"] == "port_in_use"
    assert not (data_dir / OWNER_TOKEN_FILE).exists()
    assert _users(database_url) == []  # an owner nobody holds a token for would lock the next start out
    assert await serve_then_stop(data_dir, "--postgres-url", database_url) == "admin"


# -- the database ------------------------------------------------------------------------------------------


async def test_an_unreachable_database_fails_after_the_wait_with_one_line(
    tmp_path: Path, closed_port: int
) -> None:
    data_dir = tmp_path / "data"
    url = f"postgresql://prebuildd:s3cret-pw@127.0.0.1:{closed_port}/prebuildd"
    exited = await run_server(data_dir, "--postgres-url", url, "--database-wait", "1s")
    assert exited.code != 0
    failure = exited.the_failure()
    assert failure["reason"] == "database_unreachable"
    assert failure["error"].startswith(
        f"cannot reach PostgreSQL at 127.0.0.1:{closed_port}/prebuildd (tried for 1 s)"
    )
    assert "Connection refused" in failure["error"]
    assert "--postgres-url" in failure["hint"]
    assert "s3cret-pw" not in exited.stderr
    assert "PoolTimeout" not in exited.stderr
    assert not (data_dir / OWNER_TOKEN_FILE).exists()


@pytest.mark.parametrize("wrong", ["password", "database"])
async def test_a_misconfigured_database_url_fails_at_once_with_one_line(
    tmp_path: Path, pg_server: PgServer, wrong: str
) -> None:
    data_dir = tmp_path / "data"
    if wrong == "password":
        url = _with(pg_server.admin_url, password="not-the-password")
        expected = 'password authentication failed for user "prebuildd"'
    else:
        url = _with(pg_server.admin_url, database="no_such_db")
        expected = 'database "no_such_db" does not exist'
    exited = await run_server(data_dir, "--postgres-url", url, "--database-wait", "60s")
    assert exited.code != 0
    failure = exited.the_failure()
    assert failure["reason"] == "database_refused"
    assert failure["error"].endswith(f"refused the connection: {expected}")
    assert "user, password and database name" in failure["hint"]
    assert "not-the-password" not in exited.stderr
    assert not (data_dir / OWNER_TOKEN_FILE).exists()


async def test_a_malformed_database_url_is_not_repeated(tmp_path: Path) -> None:
    exited = await run_server(tmp_path / "data", "--postgres-url", "host=x password=hunter2 nonsense")
    assert exited.code != 0
    assert exited.the_failure()["reason"] == "database_url_invalid"
    assert "hunter2" not in exited.stderr


# -- the data directory ------------------------------------------------------------------------------------


async def test_an_unwritable_data_dir_fails_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    data_dir = tmp_path / "a-file" / "data"
    exited = await run_server(data_dir)
    assert exited.code != 0
    failure = exited.the_failure()
    assert failure["reason"] == "data_dir_unwritable"
    assert failure["error"] == f"cannot write to the data directory {data_dir}: Not a directory"
    assert "--data-dir" in failure["hint"]
    assert _postgres_processes(data_dir / "postgres") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions")
async def test_a_read_only_data_dir_fails_with_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o500)
    exited = await run_server(data_dir)
    assert exited.code != 0
    assert exited.the_failure()["reason"] == "data_dir_unwritable"


async def test_a_second_server_on_one_data_dir_is_refused_before_anything_starts(
    tmp_path: Path, database_url: str
) -> None:
    data_dir = tmp_path / "data"
    held = hold_replica_id(data_dir)  # this test process plays the first server: it holds the replica id
    exited = await run_server(data_dir, "--postgres-url", database_url, "--provisioner-daemons", "1")
    assert exited.code != 0
    failure = exited.the_failure()
    assert failure["reason"] == "replica_id_in_use"
    assert str(held.path.resolve()) in failure["error"]
    assert "--data-dir" in failure["hint"]
    assert _users(database_url) == []  # refused before the database was touched
    assert not (data_dir / OWNER_TOKEN_FILE).exists()
