"""A provisioner daemon: takes jobs from a ``JobQueue``, runs them with the right provisioner, reports back.

While a job runs, a heartbeat tells the queue the daemon is alive and learns whether the job was canceled. Logs
are batched. The daemon only ever talks to the queue interface, so it runs the same inside the server or alone
on another machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from prebuildd.domain.jobs import FailureClass, JobType
from prebuildd.domain.manifest import ManifestError, TemplateManifest, parse_manifest
from prebuildd.provisioner.base import BuildContext, ImportContext, Provisioner, ProvisionerFailure
from prebuildd.queue.port import AcquiredJob, Heartbeat, JobOutcome, JobQueue, LogLine
from prebuildd.templates.archive import unpack_archive

log = structlog.get_logger(__name__)


@dataclass
class DaemonOptions:
    name: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    heartbeat_interval: float = 10.0
    poll_interval: float = 2.0
    log_flush_interval: float = 0.25
    work_root: Path | None = None
    """Parent of the per-job working directories (a temporary directory by default)."""
    data_dir: Path | None = None
    """Where provisioners may keep per-workspace data across builds."""
    access_url: str = ""


@functools.lru_cache(maxsize=64)
def _manifest(text: str) -> TemplateManifest:
    return parse_manifest(text)


def agent_env(tokens: Mapping[str, str]) -> dict[str, str]:
    """`PREBUILDD_AGENT_TOKEN_<NAME>` per agent, and `PREBUILDD_AGENT_TOKEN` when there is exactly one."""
    env = {f"PREBUILDD_AGENT_TOKEN_{name.upper().replace('-', '_')}": token for name, token in tokens.items()}
    if len(tokens) == 1:
        env["PREBUILDD_AGENT_TOKEN"] = next(iter(tokens.values()))
    return env


class _LogBuffer:
    """Collects a job's log lines and sends them in batches, in order."""

    def __init__(self, queue: JobQueue, job_id: uuid.UUID, worker_id: str, interval: float) -> None:
        self.queue, self.job_id, self.worker_id, self.interval = queue, job_id, worker_id, interval
        self.lines: list[LogLine] = []
        self._lock = asyncio.Lock()

    async def add(self, level: str, stage: str, output: str) -> None:
        self.lines.append(LogLine(level, stage, output))
        if len(self.lines) >= 100:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            lines, self.lines = self.lines, []
            if lines:
                await self.queue.append_logs(self.job_id, self.worker_id, lines)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()


class ProvisionerDaemon:
    def __init__(
        self, queue: JobQueue, provisioners: Mapping[str, Provisioner], options: DaemonOptions | None = None
    ) -> None:
        self.queue = queue
        self.provisioners = dict(provisioners)
        self.options = options or DaemonOptions()
        name = self.options.name or "daemon"
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{name}:{uuid.uuid4().hex[:8]}"
        self._stopping = asyncio.Event()
        self.current_job: uuid.UUID | None = None
        self._empty: Path | None = None
        self.interrupted: list[uuid.UUID] = []
        """Jobs this daemon was running when its task was canceled (a shutdown past its grace period)."""
        self.jobs_done = 0

    @property
    def kinds(self) -> list[str]:
        return sorted(self.provisioners)

    async def run(self) -> None:
        """Take and run jobs until ``stop`` is called; a running job is finished first."""
        log.info("daemon.started", worker_id=self.worker_id, kinds=self.kinds, tags=dict(self.options.tags))
        while not self._stopping.is_set():
            try:
                job = await self.queue.acquire(self.worker_id, self.kinds, self.options.tags)
            except Exception as exc:  # the queue is down: wait and try again, never die
                log.warning("daemon.acquire_failed", worker_id=self.worker_id, error=str(exc))
                await self._pause(self.options.poll_interval)
                continue
            if job is None:
                waiter = asyncio.ensure_future(self.queue.wait_for_jobs(self.options.poll_interval))
                stopper = asyncio.ensure_future(self._stopping.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for task in (waiter, stopper):
                    task.cancel()
                continue
            await self.run_job(job)
        log.info("daemon.stopped", worker_id=self.worker_id, jobs=self.jobs_done)

    def stop(self) -> None:
        self._stopping.set()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def run_job(self, job: AcquiredJob) -> None:
        self.current_job = job.id
        logs = _LogBuffer(self.queue, job.id, self.worker_id, self.options.log_flush_interval)
        flusher = asyncio.create_task(logs.run())
        # A provisioner that reads no files (echo) gets a shared empty directory: no per-job unpacking, which
        # was a third of a no-op job's cost (bench/queue_throughput.py).
        needs_files = getattr(self.provisioners.get(job.provisioner), "needs_files", True)
        work = self._scratch(job) if needs_files else self._empty_work()
        runner = asyncio.create_task(self._execute(job, work, logs))
        beater = asyncio.create_task(self._heartbeat(job, runner))
        try:
            outcome = await runner
        except asyncio.CancelledError:
            if beater.done() and beater.result() is Heartbeat.LOST:
                outcome = None
            elif beater.done() and beater.result() is Heartbeat.CANCELED:
                outcome = JobOutcome(canceled=True)
            else:
                self.interrupted.append(job.id)
                raise
        finally:
            beater.cancel()
            flusher.cancel()
            if needs_files:
                shutil.rmtree(work, ignore_errors=True)
            self.current_job = None
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
        if outcome is None:
            log.warning("daemon.job_lost", job_id=str(job.id), worker_id=self.worker_id)
            return
        try:
            await logs.flush()
        except Exception as exc:  # logs are worth less than the outcome
            log.warning("daemon.log_flush_failed", job_id=str(job.id), error=str(exc))
        await self.queue.complete(job.id, self.worker_id, outcome)
        self.jobs_done += 1

    async def _heartbeat(self, job: AcquiredJob, runner: asyncio.Task[JobOutcome]) -> Heartbeat:
        while True:
            await asyncio.sleep(self.options.heartbeat_interval)
            try:
                beat = await self.queue.heartbeat(job.id, self.worker_id)
            except Exception as exc:  # a missed heartbeat is tolerable; the stale timeout is much longer
                log.warning("daemon.heartbeat_failed", job_id=str(job.id), error=str(exc))
                continue
            if beat is not Heartbeat.OK:
                log.info("daemon.job_stopping", job_id=str(job.id), reason=beat.value)
                runner.cancel()
                return beat

    def _scratch(self, job: AcquiredJob) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"job-{job.id.hex[:8]}-", dir=self.options.work_root))

    def _empty_work(self) -> Path:
        if self._empty is None or not self._empty.exists():
            self._empty = Path(tempfile.mkdtemp(prefix="no-files-", dir=self.options.work_root))
            (self._empty / "files").mkdir()
        return self._empty

    async def _execute(self, job: AcquiredJob, work: Path, logs: _LogBuffer) -> JobOutcome:
        provisioner = self.provisioners.get(job.provisioner)
        if provisioner is None:
            return JobOutcome(
                error=f"this daemon cannot run {job.provisioner} jobs",
                failure_class=FailureClass.INFRASTRUCTURE,
            )
        files = work / "files"
        try:
            manifest = _manifest(job.manifest)
            if not files.exists():
                unpack_archive(job.source, files)
        except (ManifestError, ValueError) as exc:
            return JobOutcome(error=str(exc), failure_class=FailureClass.CONFIG)
        try:
            if job.type is JobType.TEMPLATE_VERSION_IMPORT:
                if (
                    job.version_id is None
                ):  # the queue always sends it; a peer that does not is refused, not fatal
                    return JobOutcome(
                        error="the import job came without its version",
                        failure_class=FailureClass.INFRASTRUCTURE,
                    )
                imported = await provisioner.import_version(
                    ImportContext(str(job.version_id), files, manifest), logs.add
                )
                return JobOutcome(parameters=imported.parameters, warnings=imported.warnings)
            if job.build is None:
                return JobOutcome(
                    error="the build job came without its build", failure_class=FailureClass.INFRASTRUCTURE
                )
            b = job.build
            data_dir = (
                self.options.data_dir / "workspaces" / str(b.workspace_id) if self.options.data_dir else None
            )
            ctx = BuildContext(
                job_id=str(job.id),
                workspace_id=str(b.workspace_id),
                workspace_name=b.workspace_name,
                owner_id=str(b.owner_id),
                owner_name=b.owner_name,
                template_name=b.template_name,
                version_id=str(b.version_id),
                transition=b.transition,
                build_number=b.build_number,
                parameters=b.parameters,
                state=b.state,
                files_dir=files,
                manifest=manifest,
                preset_name=b.preset_name,
                is_prebuild=b.is_prebuild,
                is_claim=b.reason == "claim",
                access_url=self.options.access_url,
                data_dir=data_dir,
                extra_env=agent_env(b.agent_tokens),
            )
            result = await provisioner.run_build(ctx, logs.add)
            return JobOutcome(state=result.state, outputs=result.outputs)
        except ProvisionerFailure as exc:
            await logs.add("error", "", exc.message)
            return JobOutcome(error=exc.message, failure_class=exc.failure_class, state=exc.state)
        except Exception as exc:
            log.exception("daemon.provisioner_crashed", job_id=str(job.id))
            return JobOutcome(
                error=f"provisioner {job.provisioner} crashed: {exc!r}",
                failure_class=FailureClass.INFRASTRUCTURE,
            )
