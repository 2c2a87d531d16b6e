"""What prebuildd writes to disk is its own: the data directory, the job and workspace directories are 0700 and
the embedded PostgreSQL's log (which holds statements and row values) 0600, also on an install made looser."""

from __future__ import annotations

import asyncio
import os
import pwd
from pathlib import Path

from prebuildd.server.embedded_pg import SYSTEM_USER, EmbeddedPostgres
from prebuildd.server.process import OWNER_TOKEN_FILE
from tests.support.server import RunningServer


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def test_the_embedded_postgres_keeps_its_data_dir_and_log_private(pg_dir: Path) -> None:
    data = pg_dir / "pg"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / "postgres.log").write_text("from an older version\n")
    (data / "postgres.log").chmod(0o644)
    pg = EmbeddedPostgres(data, settings={"fsync": "off"})
    await asyncio.to_thread(pg.start)
    try:
        assert mode(data / "postgres.log") == 0o600
        assert mode(pg.pgdata) == 0o700
        assert mode(data / "postgres-password") == 0o600
        if os.geteuid() == 0:  # PostgreSQL runs as its system user, whose group may only pass through
            assert mode(data) == 0o710
            assert data.stat().st_gid == pwd.getpwnam(SYSTEM_USER).pw_gid
            assert (data / "postgres.log").stat().st_uid == pwd.getpwnam(SYSTEM_USER).pw_uid
        else:
            assert mode(data) == 0o700
        # A restart reuses the server and keeps the modes.
        await asyncio.to_thread(pg.stop)
        await asyncio.to_thread(pg.start)
        assert mode(data / "postgres.log") == 0o600
        assert mode(data) in (0o700, 0o710)
    finally:
        await asyncio.to_thread(pg.stop)


async def test_the_server_data_dir_and_its_job_directory_are_private(running_server: RunningServer) -> None:
    data = running_server.data_dir
    assert mode(data) == 0o700
    assert mode(data / "jobs") == 0o700
    assert mode(data / OWNER_TOKEN_FILE) == 0o600
