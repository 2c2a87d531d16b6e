"""The daemon against the queue port itself: a job that arrives without what it needs fails as infrastructure,
and the daemon lives on to take the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from uuid import UUID, uuid4

from prebuildd.domain.jobs import FailureClass, JobType
from prebuildd.provisioner.daemon import DaemonOptions, ProvisionerDaemon
from prebuildd.provisioner.registry import available_provisioners
from prebuildd.queue.port import AcquiredJob, Heartbeat, JobOutcome, LogLine
from tests.support.waiting import wait_for

ECHO_MANIFEST = 'provisioner = "echo"\n'


class ListQueue:
    """A JobQueue over a list: hands out the given jobs in order and records every completion."""

    def __init__(self, jobs: list[AcquiredJob]) -> None:
        self.jobs = list(jobs)
        self.completed: dict[UUID, JobOutcome] = {}

    async def acquire(
        self, worker_id: str, kinds: Sequence[str], tags: Mapping[str, str]
    ) -> AcquiredJob | None:
        return self.jobs.pop(0) if self.jobs else None

    async def wait_for_jobs(self, timeout: float) -> None:
        return None

    async def heartbeat(self, job_id: UUID, worker_id: str) -> Heartbeat:
        return Heartbeat.OK

    async def append_logs(self, job_id: UUID, worker_id: str, lines: Sequence[LogLine]) -> None:
        return None

    async def complete(self, job_id: UUID, worker_id: str, outcome: JobOutcome) -> bool:
        self.completed[job_id] = outcome
        return True


def _job(job_type: JobType) -> AcquiredJob:
    return AcquiredJob(uuid4(), job_type, "echo", ECHO_MANIFEST, b"", "h")


async def test_jobs_missing_their_build_or_version_fail_as_infrastructure_and_the_daemon_goes_on(
    tmp_path: Path,
) -> None:
    build, imported = _job(JobType.WORKSPACE_BUILD), _job(JobType.TEMPLATE_VERSION_IMPORT)
    queue = ListQueue([build, imported])
    options = DaemonOptions(name="t", heartbeat_interval=0.05, poll_interval=0.05, work_root=tmp_path)
    daemon = ProvisionerDaemon(queue, available_provisioners(), options)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_for(lambda: len(queue.completed) == 2, what="both jobs completed")
    finally:
        daemon.stop()
        await task
    assert queue.completed[build.id].failure_class is FailureClass.INFRASTRUCTURE
    assert "without its build" in (queue.completed[build.id].error or "")
    assert queue.completed[imported.id].failure_class is FailureClass.INFRASTRUCTURE
    assert "without its version" in (queue.completed[imported.id].error or "")
