"""The store-level test environment: a database with an organization, users, a builder, a queue and a daemon
that runs queued jobs on demand."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from prebuildd.domain.jobs import Transition
from prebuildd.provisioner.daemon import DaemonOptions, ProvisionerDaemon
from prebuildd.provisioner.registry import available_provisioners
from prebuildd.queue.pg import PgJobQueue
from prebuildd.runtime.clock import FakeClock
from prebuildd.store.db import Database
from prebuildd.store.rows import Row
from prebuildd.templates.archive import pack_directory
from prebuildd.templates.versions import PushedVersion, push_version
from prebuildd.workspaces.builder import BuildCreated, BuildRequest, WorkspaceBuilder
from tests.support.templates import write_template


@dataclass
class Env:
    """A database with an organization, two users, a builder, a queue and a daemon that runs jobs on demand."""

    db: Database
    clock: FakeClock
    org_id: UUID
    owner_id: UUID
    member_id: UUID
    builder: WorkspaceBuilder
    queue: PgJobQueue
    daemon: ProvisionerDaemon
    tmp: Path

    async def push(
        self,
        name: str,
        manifest: str,
        files: Mapping[str, str] | None = None,
        *,
        activate: bool = True,
        run_import: bool = True,
    ) -> PushedVersion:
        directory = write_template(self.tmp / f"{name}-{self.clock.now().timestamp()}", manifest, files)
        pushed = await push_version(
            self.db,
            self.clock,
            organization_id=self.org_id,
            template_name=name,
            archive=pack_directory(directory),
            created_by=self.owner_id,
            activate=activate,
        )
        if run_import:
            await self.run_jobs()
        return pushed

    async def run_jobs(self, limit: int = 100) -> int:
        """Run queued jobs one by one with the daemon until none is left; returns how many ran."""
        ran = 0
        while ran < limit:
            job = await self.queue.acquire(self.daemon.worker_id, self.daemon.kinds, {})
            if job is None:
                return ran
            await self.daemon.run_job(job)
            ran += 1
        return ran

    async def create(
        self,
        template_id: UUID,
        name: str = "ws",
        *,
        owner_id: UUID | None = None,
        parameters: Mapping[str, object] | None = None,
        preset_id: UUID | None = None,
        version_id: UUID | None = None,
    ) -> BuildCreated:
        req = BuildRequest(
            transition=Transition.START,
            initiator_id=owner_id or self.member_id,
            owner_id=owner_id or self.member_id,
            template_id=template_id,
            name=name,
            parameters=parameters or {},
            preset_id=preset_id,
            version_id=version_id,
        )
        async with self.db.transaction() as conn:
            return await self.builder.build(conn, req)

    async def transition(self, workspace_id: UUID, transition: Transition, **kw: Any) -> BuildCreated:
        req = BuildRequest(
            transition=transition, initiator_id=self.member_id, workspace_id=workspace_id, **kw
        )
        async with self.db.transaction() as conn:
            return await self.builder.build(conn, req)

    async def one(self, sql: str, *args: object) -> Row:
        async with self.db.transaction() as conn:
            cur = await conn.execute(sql, args)  # type: ignore[arg-type]
            row = await cur.fetchone()
        assert row is not None, sql
        return row

    async def job(self, job_id: UUID) -> Row:
        return await self.one("SELECT * FROM provisioner_jobs WHERE id = %s", job_id)

    async def count(self, table: str) -> int:
        row = await self.one(f"SELECT count(*) AS n FROM {table}")
        return int(row["n"])


def daemon_for(queue: PgJobQueue, tmp: Path, **options: Any) -> ProvisionerDaemon:
    opts = DaemonOptions(
        name="test",
        heartbeat_interval=0.05,
        poll_interval=0.5,
        log_flush_interval=0.05,
        work_root=tmp,
        data_dir=tmp / "data",
        **options,
    )
    return ProvisionerDaemon(queue, available_provisioners(), opts)
