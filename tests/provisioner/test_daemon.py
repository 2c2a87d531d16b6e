"""The daemon against the queue port itself: a job that arrives without what it needs fails as infrastructure,
and the daemon lives on to take the next one; a queue that fails (an outage, a refusal, a bug) never ends the
daemon, and a finished job's outcome is delivered once the queue is back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from structlog.testing import capture_logs

from prebuildd.domain.jobs import FailureClass, JobType, Transition
from prebuildd.provisioner import daemon as daemon_module
from prebuildd.provisioner.base import BuildContext, BuildResult, ImportContext, ImportResult, LogSink
from prebuildd.provisioner.daemon import MAX_REFUSED_COMPLETIONS, DaemonOptions, ProvisionerDaemon
from prebuildd.provisioner.registry import available_provisioners
from prebuildd.queue.port import AcquiredJob, BuildPayload, Heartbeat, JobOutcome, LogLine
from tests.support.waiting import wait_for

ECHO_MANIFEST = 'provisioner = "echo"\n'


class ListQueue:
    """A JobQueue over a list: hands out the given jobs in order and records every completion."""

    def __init__(self, jobs: list[AcquiredJob]) -> None:
        self.jobs = list(jobs)
        self.completed: dict[UUID, JobOutcome] = {}
        self.registered: list[tuple[str, str]] = []
        self.acquired_by: list[str] = []

    async def register(self, identity: str, worker_id: str) -> list[UUID]:
        self.registered.append((identity, worker_id))
        return []

    async def acquire(
        self, worker_id: str, kinds: Sequence[str], tags: Mapping[str, str]
    ) -> AcquiredJob | None:
        self.acquired_by.append(worker_id)
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


class Down(Exception):
    """The queue's dependency is away (what StoreUnavailable or TransientError stand for)."""


class FlakyQueue(ListQueue):
    """A ListQueue whose calls fail while ``down`` says so: ``Down`` is an outage, anything else a refusal."""

    def __init__(self, jobs: list[AcquiredJob]) -> None:
        super().__init__(jobs)
        self.fail: dict[str, list[Exception]] = {}
        """Per call name, the errors its next calls raise (one each), before it works again."""
        self.calls: dict[str, int] = {}
        self.logged: list[LogLine] = []
        self.heartbeat_answer = Heartbeat.OK
        self.outage = False
        self.watched: UUID | None = None
        """The job whose log lines ``logged`` keeps."""

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        return isinstance(exc, Down)

    def _call(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.outage:
            raise Down(f"{name}: connection refused")
        if self.fail.get(name):
            raise self.fail[name].pop(0)

    async def register(self, identity: str, worker_id: str) -> list[UUID]:
        self._call("register")
        return await super().register(identity, worker_id)

    async def acquire(
        self, worker_id: str, kinds: Sequence[str], tags: Mapping[str, str]
    ) -> AcquiredJob | None:
        self._call("acquire")
        return await super().acquire(worker_id, kinds, tags)

    async def heartbeat(self, job_id: UUID, worker_id: str) -> Heartbeat:
        self._call("heartbeat")
        return self.heartbeat_answer

    async def append_logs(self, job_id: UUID, worker_id: str, lines: Sequence[LogLine]) -> None:
        self._call("append_logs")
        self.logged.extend(line for line in lines if job_id == self.watched)

    async def complete(self, job_id: UUID, worker_id: str, outcome: JobOutcome) -> bool:
        self._call("complete")
        return await super().complete(job_id, worker_id, outcome)


def _echo_job(*logs: str) -> AcquiredJob:
    lines = ", ".join(f'"{line}"' for line in logs)
    manifest = f'provisioner = "echo"\n[echo]\nstart = {{ logs = [{lines}] }}\n'
    build = BuildPayload(
        build_id=uuid4(),
        build_number=1,
        transition=Transition.START,
        reason="initiator",
        parameters={},
        state=None,
        workspace_id=uuid4(),
        workspace_name="ws",
        owner_id=uuid4(),
        owner_name="alice",
        template_name="t",
        version_id=uuid4(),
        preset_name=None,
        is_prebuild=False,
    )
    return AcquiredJob(uuid4(), JobType.WORKSPACE_BUILD, "echo", manifest, b"", "h", build, build.version_id)


def _daemon(queue: ListQueue, tmp_path: Path, **options: Any) -> ProvisionerDaemon:
    settings: dict[str, Any] = {
        "name": "t",
        "identity": "replica-1/embedded-0",
        "heartbeat_interval": 0.02,
        "poll_interval": 0.02,
        "log_flush_interval": 0.01,
        "work_root": tmp_path,
        "retry_first": 0.01,
        "retry_max": 0.05,
    }
    settings.update(options)
    return ProvisionerDaemon(queue, available_provisioners(), DaemonOptions(**settings))


@contextlib.asynccontextmanager
async def running(daemon: ProvisionerDaemon) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(daemon.run())
    try:
        yield task
    finally:
        daemon.stop()
        await asyncio.wait_for(task, timeout=10)


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def test_a_daemon_registers_its_identity_before_its_first_acquire(tmp_path: Path) -> None:
    queue = FlakyQueue([])
    queue.fail["register"] = [Down("database is starting"), Down("database is starting")]
    daemon = _daemon(queue, tmp_path)
    assert daemon.worker_id.startswith("replica-1/embedded-0#")
    async with running(daemon):
        await wait_for(lambda: queue.acquired_by, what="a first acquire")
    assert queue.calls["register"] == 3  # retried through the outage
    assert queue.registered == [("replica-1/embedded-0", daemon.worker_id)]
    assert set(queue.acquired_by) == {daemon.worker_id}


class Gated:
    """An echo-kind provisioner that waits for ``go``, logs two lines and succeeds with a state."""

    kind = "echo"
    needs_files = False

    def __init__(self) -> None:
        self.go = asyncio.Event()

    async def run_build(self, ctx: BuildContext, log: LogSink) -> BuildResult:
        await self.go.wait()
        await log("info", "start", "one")
        await log("info", "start", "two")
        return BuildResult(state=b"terraform-state")

    async def import_version(self, ctx: ImportContext, log: LogSink) -> ImportResult:
        return ImportResult(parameters=ctx.manifest.parameters)


async def test_a_completion_that_fails_is_retried_with_heartbeats_until_accepted(tmp_path: Path) -> None:
    job, following = _echo_job(), _echo_job()
    queue = FlakyQueue([job, following])
    gated = Gated()
    daemon = _daemon(queue, tmp_path)
    daemon.provisioners["echo"] = gated
    queue.watched = job.id
    with capture_logs() as logs:
        async with running(daemon) as task:
            await wait_for(lambda: daemon.current_job == job.id, what="the job to start")
            queue.outage = True  # the database (or the server) goes away while the job runs
            gated.go.set()
            # Each attempt sends the kept lines first, and completes only once they are sent.
            await wait_for(lambda: queue.calls.get("append_logs", 0) >= 5, what="delivery attempts")
            beats = queue.calls.get("heartbeat", 0)
            await wait_for(lambda: queue.calls.get("heartbeat", 0) > beats + 2, what="heartbeats meanwhile")
            assert job.id not in queue.completed and not task.done()
            queue.outage = False
            await wait_for(lambda: following.id in queue.completed, what="both jobs completed")
            assert not task.done()
    delivered = queue.completed[job.id]
    assert delivered.error is None and delivered.state == b"terraform-state"  # the outcome, state and all
    # The lines that could not be sent were kept, in order, and sent before the completion.
    assert [line.output for line in queue.logged] == ["one", "two"]
    # One line when the queue went away, one when it came back: not one per attempt.
    [down] = _events(logs, "component.unavailable")
    assert (down["component"], down["dependency"], down["worker_id"]) == (
        "daemon",
        "database",
        daemon.worker_id,
    )
    assert len(_events(logs, "component.recovered")) == 1
    assert daemon.jobs_done == 2


async def test_a_completion_waits_for_the_lines_that_could_not_be_sent_yet(tmp_path: Path) -> None:
    # Only the log posts fail (a server restarting between two requests answers the completion, not the
    # lines): completing first would lose the lines, which a completed job no longer takes.
    job = _echo_job()
    queue = FlakyQueue([job])
    gated = Gated()
    daemon = _daemon(queue, tmp_path)
    daemon.provisioners["echo"] = gated
    queue.watched = job.id
    queue.fail["append_logs"] = [Down("server restarting")] * 20
    async with running(daemon):
        await wait_for(lambda: daemon.current_job == job.id, what="the job to start")
        gated.go.set()
        await wait_for(lambda: job.id in queue.completed, what="the job completed")
        assert not queue.fail["append_logs"]  # every failed post came before the completion
        assert [line.output for line in queue.logged] == ["one", "two"]


async def test_a_job_lost_while_its_completion_fails_is_given_up_and_the_daemon_goes_on(
    tmp_path: Path,
) -> None:
    job, following = _echo_job(), _echo_job()
    queue = FlakyQueue([job, following])
    queue.fail["complete"] = [Down("connection refused")] * 1000
    daemon = _daemon(queue, tmp_path)
    with capture_logs() as logs:
        async with running(daemon):
            await wait_for(lambda: queue.calls.get("complete", 0) >= 3, what="completion attempts")
            queue.heartbeat_answer = Heartbeat.LOST  # failed as stale meanwhile: nothing left to deliver
            await wait_for(lambda: "job_lost" in str(logs), what="the job given up")
            queue.fail["complete"].clear()
            queue.heartbeat_answer = Heartbeat.OK
            await wait_for(lambda: following.id in queue.completed, what="the next job completed")
    assert job.id not in queue.completed
    assert [e["job_id"] for e in _events(logs, "daemon.job_lost")] == [str(job.id)]


async def test_an_outcome_the_queue_keeps_refusing_becomes_a_failure_that_keeps_the_state(
    tmp_path: Path,
) -> None:
    job, following = _echo_job(), _echo_job()
    queue = FlakyQueue([job, following])
    queue.fail["complete"] = [ValueError("integer out of range")] * MAX_REFUSED_COMPLETIONS
    async with running(_daemon(queue, tmp_path)):
        await wait_for(lambda: following.id in queue.completed, what="both jobs completed")
    replaced = queue.completed[job.id]
    assert replaced.failure_class is FailureClass.INFRASTRUCTURE
    assert "refused the job's outcome: integer out of range" in (replaced.error or "")
    assert replaced.state == b"echo-state:1"  # kept, so that the workspace's delete can clean up


async def test_no_exception_from_the_queue_ends_the_daemon(tmp_path: Path) -> None:
    job = _echo_job()
    queue = FlakyQueue([job])
    queue.fail["acquire"] = [RuntimeError("bug"), Down("gone"), KeyError("x")]
    queue.fail["heartbeat"] = [RuntimeError("bug")] * 3
    queue.fail["append_logs"] = [RuntimeError("refused")]
    with capture_logs() as logs:
        async with running(_daemon(queue, tmp_path)) as task:
            await wait_for(lambda: job.id in queue.completed, what="the job completed")
            assert not task.done()
    assert queue.calls["acquire"] >= 4
    assert _events(logs, "daemon.acquire_failed")  # a bug is logged at once, with its own event


async def test_log_lines_wait_in_a_bounded_buffer_and_a_refused_batch_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module, "LOG_BUFFER_LINES", 5)
    job_id = uuid4()
    queue = FlakyQueue([])
    queue.watched = job_id
    buffer = daemon_module._LogBuffer(_daemon(queue, tmp_path), job_id, 0.01)
    queue.outage = True
    for i in range(8):
        await buffer.add("info", "", f"line {i}")
    assert not await buffer.flush()
    assert [line.output for line in buffer.lines] == [f"line {i}" for i in range(3, 8)]  # the newest kept
    queue.outage = False
    assert await buffer.flush()
    assert [line.output for line in queue.logged] == [
        "3 log lines were dropped while the queue could not take them",
        *(f"line {i}" for i in range(3, 8)),
    ]
    queue.fail["append_logs"] = [ValueError("level: unknown")]  # refused, not an outage: not kept for ever
    await buffer.add("loud", "", "refused")
    assert await buffer.flush()
    assert buffer.lines == [] and queue.logged[-1].output == "line 7"
