"""The job queue on PostgreSQL: ``FOR UPDATE SKIP LOCKED``, human jobs first, LISTEN/NOTIFY wake-ups.

Operator operations (cancel, failing stale jobs, reading logs) live here only, not on the daemon's port.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import structlog

from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.domain.jobs import FailureClass, JobType, Transition
from prebuildd.domain.manifest import ManifestError
from prebuildd.domain.secrets import AGENT_TOKEN_PREFIX, new_secret, secret_hash
from prebuildd.queue.port import AcquiredJob, BuildPayload, Heartbeat, JobOutcome, LogLine
from prebuildd.runtime.clock import Clock
from prebuildd.store import channels
from prebuildd.store.db import Conn, Database, Row, execute, fetch_all, fetch_one, jsonb
from prebuildd.store.listener import Listener
from prebuildd.templates.versions import record_import

log = structlog.get_logger(__name__)


class PgJobQueue:
    """The queue on PostgreSQL: ``FOR UPDATE SKIP LOCKED``, human jobs first, LISTEN/NOTIFY wake-ups."""

    def __init__(self, db: Database, clock: Clock, listener: Listener | None = None) -> None:
        self.db = db
        self.clock = clock
        self.listener = listener

    async def acquire(
        self, worker_id: str, kinds: Sequence[str], tags: Mapping[str, str]
    ) -> AcquiredJob | None:
        async with self.db.transaction() as conn:
            job = await fetch_one(
                conn,
                "jobs.acquire",
                {
                    "now": self.clock.now(),
                    "worker_id": worker_id,
                    "kinds": list(kinds),
                    "tags": jsonb(dict(tags)),
                },
            )
            if job is None:
                return None
            return await self._payload(conn, job)

    async def _payload(self, conn: Conn, job: Row) -> AcquiredJob:
        job_type = JobType(job["type"])
        if job_type is JobType.TEMPLATE_VERSION_IMPORT:
            version_id = UUID(job["input"]["template_version_id"])
            version = await fetch_one(conn, "templates.version_source", {"id": version_id})
            assert version is not None, f"import job {job['id']} has no version"
            return AcquiredJob(
                job["id"],
                job_type,
                job["provisioner"],
                version["manifest"],
                version["source"],
                version["source_hash"],
                version_id=version_id,
            )
        row = await fetch_one(
            conn, "workspaces.build_for_job", {"job_id": job["id"], "prebuilds_user_id": PREBUILDS_USER_ID}
        )
        assert row is not None, f"build job {job['id']} has no build"
        build = BuildPayload(
            build_id=row["build_id"],
            build_number=row["build_number"],
            transition=Transition(row["transition"]),
            reason=row["reason"],
            parameters=row["parameters"],
            state=row["previous_state"],
            workspace_id=row["workspace_id"],
            workspace_name=row["workspace_name"],
            owner_id=row["owner_id"],
            owner_name=row["owner_name"],
            template_name=row["template_name"],
            version_id=row["version_id"],
            preset_name=row["preset_name"],
            is_prebuild=row["is_prebuild"],
            agent_tokens=await self._agent_tokens(conn, row),
        )
        return AcquiredJob(
            job["id"],
            job_type,
            job["provisioner"],
            row["manifest"],
            row["source"],
            row["source_hash"],
            build=build,
            version_id=row["version_id"],
        )

    async def _agent_tokens(self, conn: Conn, row: Row) -> dict[str, str]:
        if row["transition"] != Transition.START or row["reason"] == "claim" or row["agents"] == []:
            return {}
        tokens = {}
        for name in row["agents"]:
            tokens[name] = new_secret(AGENT_TOKEN_PREFIX)
            await execute(
                conn,
                "agents.issue_token",
                {
                    "id": uuid4(),
                    "workspace_id": row["workspace_id"],
                    "name": name,
                    "token_hash": secret_hash(tokens[name]),
                    "now": self.clock.now(),
                },
            )
        return tokens

    async def wait_for_jobs(self, timeout: float) -> None:
        if self.listener is None:
            await asyncio.sleep(timeout)
        else:
            await self.listener.wait(channels.JOB_QUEUED, timeout)

    async def heartbeat(self, job_id: UUID, worker_id: str) -> Heartbeat:
        async with self.db.transaction() as conn:
            row = await fetch_one(
                conn, "jobs.heartbeat", {"id": job_id, "worker_id": worker_id, "now": self.clock.now()}
            )
        if row is None:
            return Heartbeat.LOST
        return Heartbeat.CANCELED if row["canceled"] else Heartbeat.OK

    async def append_logs(self, job_id: UUID, worker_id: str, lines: Sequence[LogLine]) -> None:
        if not lines:
            return
        now = self.clock.now()
        async with self.db.transaction() as conn:
            await execute(
                conn,
                "jobs.insert_logs",
                {
                    "job_id": job_id,
                    "worker_id": worker_id,
                    "created_at": [now] * len(lines),
                    "levels": [line.level for line in lines],
                    "stages": [line.stage for line in lines],
                    "outputs": [line.output for line in lines],
                },
            )

    async def complete(self, job_id: UUID, worker_id: str, outcome: JobOutcome) -> bool:
        now = self.clock.now()
        error = outcome.error
        failure_class = outcome.failure_class
        if outcome.canceled:
            error, failure_class = None, None
        elif error and failure_class is None:
            failure_class = FailureClass.BUILD
        params = {
            "id": job_id,
            "worker_id": worker_id,
            "now": now,
            "error": error,
            "failure_class": failure_class.value if failure_class else None,
        }
        # Most completions are builds: one statement, its own transaction, one round trip instead of five
        # (bench/queue_throughput.py). Anything else (imports, a job no longer ours) takes the general path.
        async with self.db.autocommit() as conn:
            build = await fetch_one(
                conn,
                "jobs.complete_build",
                {**params, "state": outcome.state, "outputs": jsonb(dict(outcome.outputs))},
            )
        if build is not None:
            log.info("job.completed", job_id=str(job_id), status=build["job_status"], error=error)
            return True
        return await self._complete(job_id, worker_id, outcome, params)

    async def _complete(
        self, job_id: UUID, worker_id: str, outcome: JobOutcome, params: dict[str, Any]
    ) -> bool:
        now, error = params["now"], params["error"]
        async with self.db.transaction() as conn:
            job = await fetch_one(conn, "jobs.complete", params)
            if job is None:
                log.warning(
                    "job.complete_refused",
                    job_id=str(job_id),
                    worker_id=worker_id,
                    reason="job is no longer held by this worker",
                )
                return False
            if job["type"] == JobType.TEMPLATE_VERSION_IMPORT and job["job_status"] == "succeeded":
                manifest_error = await self._record_import(conn, job_id, outcome)
                if manifest_error is not None:
                    # The import ran but its result does not fit the manifest: the version fails to import.
                    await execute(
                        conn,
                        "jobs.set_error",
                        {
                            "id": job_id,
                            "error": str(manifest_error),
                            "failure_class": FailureClass.CONFIG.value,
                            "now": now,
                        },
                    )
            if job["type"] == JobType.WORKSPACE_BUILD and job["job_status"] == "succeeded":
                await self._finish_build(conn, job_id, outcome)
            elif job["type"] == JobType.WORKSPACE_BUILD and outcome.state is not None:
                await execute(
                    conn,
                    "workspaces.keep_failed_state",
                    {"job_id": job_id, "state": outcome.state, "now": now},
                )
            await _notify_completed(conn, job_id, job["type"], job["input"].get("workspace_id"))
        log.info("job.completed", job_id=str(job_id), status=job["job_status"], error=error)
        return True

    async def _record_import(self, conn: Conn, job_id: UUID, outcome: JobOutcome) -> ManifestError | None:
        try:
            async with conn.transaction():
                await record_import(conn, self.clock, job_id, outcome.parameters, outcome.warnings)
        except ManifestError as exc:
            return exc
        return None

    async def _finish_build(self, conn: Conn, job_id: UUID, outcome: JobOutcome) -> None:
        now = self.clock.now()
        build = await fetch_one(
            conn,
            "workspaces.finish_build",
            {
                "job_id": job_id,
                "state": outcome.state,
                "outputs": jsonb(dict(outcome.outputs)),
                "now": now,
            },
        )
        assert build is not None
        if build["transition"] == Transition.DELETE:
            await execute(conn, "workspaces.mark_deleted", {"id": build["workspace_id"], "now": now})

    # -- operator operations -------------------------------------------------------------------------------

    async def cancel(self, job_id: UUID) -> str | None:
        """Cancel a job: a pending one never starts; a running one is stopped by its daemon. Returns its status."""
        async with self.db.transaction() as conn:
            row = await fetch_one(conn, "jobs.cancel", {"id": job_id, "now": self.clock.now()})
            if row is not None and row["job_status"] == "canceled":
                await _notify_completed(conn, job_id, None, None)
        return None if row is None else str(row["job_status"])

    async def release(self, job_id: UUID, worker_id: str) -> bool:
        """Put a job interrupted by a shutdown back in the queue (it runs again from the start)."""
        async with self.db.transaction() as conn:
            row = await fetch_one(
                conn, "jobs.release", {"id": job_id, "worker_id": worker_id, "now": self.clock.now()}
            )
        return row is not None

    async def fail_stale(self, stale_after: timedelta) -> list[UUID]:
        """Fail running jobs whose daemon has not sent a heartbeat for ``stale_after`` (class infrastructure)."""
        now = self.clock.now()
        async with self.db.transaction() as conn:
            rows = await fetch_all(conn, "jobs.fail_stale", {"now": now, "cutoff": now - stale_after})
            for row in rows:
                await _notify_completed(conn, row["id"], row["type"], row["input"].get("workspace_id"))
        for row in rows:
            log.warning("job.failed_stale", job_id=str(row["id"]))
        return [row["id"] for row in rows]

    async def logs(self, job_id: UUID, after: int = 0, limit: int = 1000) -> list[Row]:
        async with self.db.transaction() as conn:
            return await fetch_all(
                conn, "jobs.logs_after", {"job_id": job_id, "after": after, "limit": limit}
            )


async def _notify_completed(conn: Conn, job_id: UUID, job_type: str | None, workspace_id: str | None) -> None:
    payload = json.dumps({"job_id": str(job_id), "type": job_type, "workspace_id": workspace_id})
    await execute(conn, "jobs.notify_completed", {"payload": payload})
