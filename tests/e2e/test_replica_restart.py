"""A replica that comes back fails the jobs its previous run held at once: its embedded daemons keep their
identities (`<replica-id>/embedded-<i>`, the id kept in `<data-dir>/replica-id`) and register before their first
job. The previous run is another server on the same data dir here, left running as a crashed one would be: its
daemon never sends the job's outcome, and the new run does not wait for the stale timeout."""

from __future__ import annotations

from pathlib import Path

from prebuildd.runtime.identities import REPLICA_ID_FILE
from tests.support.api import API, push, wait_build, wait_imported
from tests.support.server import RunningServer, start_server
from tests.support.templates import BLOCKING_MANIFEST, blocking_files
from tests.support.waiting import wait_for


async def test_a_restarted_replica_fails_its_previous_runs_jobs_at_once(
    database_url: str, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    data_dir = tmp_path / "server"
    previous = await start_server(database_url, data_dir, provisioner_daemons=1, stale_job_timeout=3600.0)
    restarted: RunningServer | None = None
    try:
        replica_id = (data_dir / REPLICA_ID_FILE).read_text().strip()
        [daemon] = previous.server.daemons
        assert daemon.worker_id.startswith(f"{replica_id}/embedded-0#")
        async with previous.client() as client:
            assert (
                await push(client, tmp_path, "blocking", BLOCKING_MANIFEST, blocking_files(release))
            ).is_success
            await wait_imported(client, "blocking", "v1")
            created = await client.post(f"{API}/workspaces", json={"name": "held", "template": "blocking"})
            assert created.status_code == 201, created.text
            workspace_id = created.json()["id"]

            async def running() -> bool:
                return daemon.current_job is not None

            await wait_for(running, timeout=60, what="the previous run's daemon to take the build")
        restarted = await start_server(
            database_url, data_dir, provisioner_daemons=1, stale_job_timeout=3600.0
        )
        [again] = restarted.server.daemons
        assert again.identity == daemon.identity and again.worker_id != daemon.worker_id
        async with restarted.client() as client:
            build = await wait_build(client, workspace_id, 1)  # failed at once: the stale timeout is an hour
        assert build["status"] == "failed"
        assert build["failure_class"] == "daemon_lost"
        assert f"its daemon {replica_id}/embedded-0 restarted" in build["error"]
        # The previous run's daemon learns the job is not its own any more and stops it.
        await wait_for(lambda: daemon.current_job is None, timeout=30, what="the old daemon to drop the job")
    finally:
        release.touch()
        if restarted is not None:
            await restarted.server.stop()
        await previous.server.stop()
