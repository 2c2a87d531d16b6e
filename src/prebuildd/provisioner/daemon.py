"""A provisioner daemon: takes jobs from a ``JobQueue``, runs them with the right provisioner, reports back.

While a job runs, a heartbeat tells the queue the daemon is alive and learns whether the job was canceled. Logs
are batched. The daemon only ever talks to the queue interface, so it runs the same inside the server or alone
on another machine.

The queue may be away at any moment (the database restarting, the server unreachable): nothing the queue raises
ends ``run``. A finished job's outcome (and the state it produced) is delivered until the queue accepts it or
the job is known lost, with a capped backoff, while heartbeats keep the job from being failed as stale; log
lines wait in a bounded buffer. An outage is logged once when it starts and once when it ends (``FaultState``).

Each daemon has a stable ``identity`` and a per-run worker id ``<identity>#<run>``. Before its first job it
registers, and the queue fails at once the jobs an earlier run of the same identity still held: they died with
that run, and waiting for the stale timeout would keep their pools short for minutes.
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
from prebuildd.runtime.faults import ChangeHook, FaultState
from prebuildd.templates.archive import unpack_archive

log = structlog.get_logger(__name__)

RETRY_FIRST = 0.5
"""Seconds before the first retry of a failed queue call; doubled after each failure up to ``RETRY_MAX``."""
RETRY_MAX = 10.0
IDLE_RECHECK = 30.0
"""Seconds an idle daemon waits before looking for a job on its own, when its queue wakes it for jobs."""
LOG_BUFFER_LINES = 10_000
"""Log lines a job keeps while they cannot be sent; beyond, the oldest are dropped (and the drop is logged)."""
MAX_REFUSED_COMPLETIONS = 5
"""Completions refused for a reason retrying cannot fix (not an outage) before the outcome is replaced by a
failure that says so; that failure is tried as often, then the job is left to the stale-job reaper."""


@dataclass
class DaemonOptions:
    name: str = ""
    identity: str = ""
    """Stable across restarts of this daemon (``<replica-id>/embedded-<i>``, or a standalone daemon's identity),
    so that a restarted daemon fails its previous run's jobs at once. Empty: one per process, nothing to fail."""
    tags: Mapping[str, str] = field(default_factory=dict)
    heartbeat_interval: float = 10.0
    poll_interval: float = 2.0
    log_flush_interval: float = 0.25
    work_root: Path | None = None
    """Parent of the per-job working directories (a temporary directory by default)."""
    data_dir: Path | None = None
    """Where provisioners may keep per-workspace data across builds."""
    access_url: str = ""
    retry_first: float = RETRY_FIRST
    retry_max: float = RETRY_MAX
    on_fault_change: ChangeHook | None = None
    """Told when the daemon loses or regains its queue (metrics attach here)."""


@functools.lru_cache(maxsize=64)
def _manifest(text: str) -> TemplateManifest:
    return parse_manifest(text)


def agent_env(tokens: Mapping[str, str]) -> dict[str, str]:
    """`PREBUILDD_AGENT_TOKEN_<NAME>` per agent, and `PREBUILDD_AGENT_TOKEN` when there is exactly one."""
    env = {f"PREBUILDD_AGENT_TOKEN_{name.upper().replace('-', '_')}": token for name, token in tokens.items()}
    if len(tokens) == 1:
        env["PREBUILDD_AGENT_TOKEN"] = next(iter(tokens.values()))
    return env


class _Backoff:
    """Capped exponential pauses between retries: 0.5 s, 1 s, 2 s, … 10 s (by default)."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap, self.delay = first, cap, first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.delay = self.first


class _LogBuffer:
    """Collects a job's log lines and sends them in batches, in order. A failed send keeps the lines for the
    next one (at most ``LOG_BUFFER_LINES``, the oldest dropped first); a batch the queue refuses for good is
    dropped, so that one bad line cannot hold back the rest."""

    def __init__(self, daemon: ProvisionerDaemon, job_id: uuid.UUID, interval: float) -> None:
        self.daemon, self.job_id, self.interval = daemon, job_id, interval
        self.lines: list[LogLine] = []
        self.dropped = 0
        self.failing = False
        self._lock = asyncio.Lock()
        self._sender: asyncio.Task[None] | None = None
        """Sends batches every ``interval``; started by the first line (most no-op jobs log nothing)."""

    async def add(self, level: str, stage: str, output: str) -> None:
        self.lines.append(LogLine(level, stage, output))
        self._trim()
        if self._sender is None:
            self._sender = asyncio.create_task(self.run())
        if len(self.lines) >= 100 and not self.failing and not self._lock.locked():
            await self.flush()

    def _trim(self) -> None:
        excess = len(self.lines) - LOG_BUFFER_LINES
        if excess > 0:
            del self.lines[:excess]
            self.dropped += excess

    async def flush(self) -> bool:
        """Send what is buffered; False when it could not be sent (the lines are kept). Never raises."""
        async with self._lock:
            lines, self.lines = self.lines, []
            if not lines:
                return True
            dropped = self.dropped
            batch = lines
            if dropped:
                note = f"{dropped} log lines were dropped while the queue could not take them"
                batch = [LogLine("warn", "", note), *lines]
            try:
                await self.daemon.queue.append_logs(self.job_id, self.daemon.worker_id, batch)
            except asyncio.CancelledError:
                self.lines = lines + self.lines
                raise
            except Exception as exc:
                if not self.daemon.transient(exc):
                    self.dropped = 0
                    log.warning(
                        "daemon.logs_refused",
                        job_id=str(self.job_id),
                        worker_id=self.daemon.worker_id,
                        lines=len(lines),
                        error=str(exc),
                    )
                    return True
                self.daemon.fault.failed(exc, worker_id=self.daemon.worker_id, job_id=str(self.job_id))
                self.failing = True
                self.lines = lines + self.lines
                self._trim()
                return False
            self.failing = False
            self.dropped -= dropped
            if not self.daemon.delivering:
                self.daemon.fault.recovered(worker_id=self.daemon.worker_id)
            return True

    def stop(self) -> None:
        if self._sender is not None:
            self._sender.cancel()

    async def stopped(self) -> None:
        if self._sender is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender

    async def run(self) -> None:
        backoff = self.daemon._backoff()
        while True:
            # While sends fail, the next try waits longer (capped); the lines wait in the buffer meanwhile.
            await asyncio.sleep(backoff.next() if self.failing else self.interval)
            if await self.flush():
                backoff.reset()


class ProvisionerDaemon:
    def __init__(
        self, queue: JobQueue, provisioners: Mapping[str, Provisioner], options: DaemonOptions | None = None
    ) -> None:
        self.queue = queue
        self.provisioners = dict(provisioners)
        self.options = options or DaemonOptions()
        name = self.options.name or "daemon"
        self.identity = self.options.identity or f"{socket.gethostname()}:{os.getpid()}:{name}"
        if "#" in self.identity:
            raise ValueError(f"daemon identity {self.identity!r}: '#' separates the identity from the run")
        self.worker_id = f"{self.identity}#{uuid.uuid4().hex[:8]}"
        self.fault = FaultState(
            "daemon", getattr(queue, "dependency", "database"), on_change=self.options.on_fault_change
        )
        self.registered = False
        self.delivering = False
        """A finished job's outcome is being delivered: only the completion's answer ends an outage then."""
        self._stopping = asyncio.Event()
        self.current_job: uuid.UUID | None = None
        self._empty: Path | None = None
        self.interrupted: list[uuid.UUID] = []
        """Jobs this daemon was running when its task was canceled (a shutdown past its grace period)."""
        self.undelivered: dict[uuid.UUID, JobOutcome] = {}
        """Outcomes of interrupted jobs that had finished but were not delivered yet."""
        self.jobs_done = 0

    @property
    def kinds(self) -> list[str]:
        return sorted(self.provisioners)

    def _backoff(self) -> _Backoff:
        return _Backoff(self.options.retry_first, self.options.retry_max)

    def transient(self, exc: BaseException) -> bool:
        """Whether a failed queue call is an outage (retried without limit) rather than a refusal."""
        is_transient = getattr(self.queue, "is_transient", None)
        return True if is_transient is None else bool(is_transient(exc))

    def _failed(self, what: str, exc: Exception) -> None:
        """A queue call failed: an outage is logged once (``FaultState``); anything else at once, as a bug."""
        if self.transient(exc):
            self.fault.failed(exc, worker_id=self.worker_id)
        else:
            log.error(
                f"daemon.{what}_failed", worker_id=self.worker_id, error=str(exc), kind=type(exc).__name__
            )

    async def run(self) -> None:
        """Take and run jobs until ``stop`` is called; a running job is finished first. Never raises but
        ``CancelledError``: whatever the queue does, the daemon tries again."""
        log.info(
            "daemon.started",
            worker_id=self.worker_id,
            identity=self.identity,
            kinds=self.kinds,
            tags=dict(self.options.tags),
        )
        backoff = self._backoff()
        while not self._stopping.is_set():
            try:
                if not self.registered:
                    await self._register()
                    backoff.reset()
                    continue
                job = await self.queue.acquire(self.worker_id, self.kinds, self.options.tags)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the queue is down: wait and try again, never die
                self._failed("register" if not self.registered else "acquire", exc)
                await self._pause(backoff.next())
                continue
            self.fault.recovered(worker_id=self.worker_id)
            backoff.reset()
            try:
                if job is None:
                    await self._wait_for_jobs()
                else:
                    await self.run_job(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "daemon.job_crashed", worker_id=self.worker_id, job_id=str(job.id) if job else None
                )
                await self._pause(backoff.next())
        log.info("daemon.stopped", worker_id=self.worker_id, jobs=self.jobs_done)

    async def _register(self) -> None:
        failed = await self.queue.register(self.identity, self.worker_id)
        self.registered = True
        self.fault.recovered(worker_id=self.worker_id)
        if failed:
            log.warning(
                "daemon.previous_run_jobs_failed",
                identity=self.identity,
                worker_id=self.worker_id,
                jobs=[str(job_id) for job_id in failed],
            )

    async def _wait_for_jobs(self) -> None:
        if getattr(self.queue, "wakes_waiters", False):
            # The queue wakes this daemon when a job fits it (a notification, or its process's one poll): an
            # idle daemon looks on its own only now and then, so that many idle daemons cost the database
            # next to nothing.
            wait = self.queue.wait_for_jobs(
                max(self.options.poll_interval, IDLE_RECHECK),
                kinds=self.kinds,
                tags=self.options.tags,
                worker_id=self.worker_id,
            )
        else:
            wait = self.queue.wait_for_jobs(self.options.poll_interval)
        waiter = asyncio.ensure_future(wait)
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, stopper):
                task.cancel()
        if waiter.done() and not waiter.cancelled() and (error := waiter.exception()) is not None:
            # A wake-up that failed (the listener lost its database) is worth no more than a poll.
            self._failed("wait_for_jobs", error if isinstance(error, Exception) else Exception(str(error)))
            await self._pause(self.options.poll_interval)

    def stop(self) -> None:
        self._stopping.set()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):  # asyncio.timeout: wait_for may swallow a cancellation (3.11)
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def run_job(self, job: AcquiredJob) -> None:
        self.current_job = job.id
        logs = _LogBuffer(self, job.id, self.options.log_flush_interval)
        # A provisioner that reads no files (echo) gets a shared empty directory: no per-job unpacking, which
        # was a third of a no-op job's cost (bench/queue_throughput.py).
        needs_files = getattr(self.provisioners.get(job.provisioner), "needs_files", True)
        work = self._scratch(job) if needs_files else self._empty_work()
        runner = asyncio.create_task(self._execute(job, work, logs))
        beater = asyncio.create_task(self._heartbeat(job.id, runner))
        try:
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
                logs.stop()
                if needs_files:
                    shutil.rmtree(work, ignore_errors=True)
            await logs.stopped()
            if outcome is None:
                log.warning("daemon.job_lost", job_id=str(job.id), worker_id=self.worker_id)
                return
            try:
                delivered = await self._deliver(job.id, outcome, logs)
            except asyncio.CancelledError:
                self.interrupted.append(job.id)
                self.undelivered[job.id] = outcome
                raise
            if delivered:
                self.jobs_done += 1
        finally:
            self.current_job = None

    async def _deliver(self, job_id: uuid.UUID, outcome: JobOutcome, logs: _LogBuffer) -> bool:
        """Complete the job until the queue answers; True when it accepted the outcome. Heartbeats go on
        meanwhile, so that an outage shorter than the stale timeout loses nothing; a job found lost (failed as
        stale, or no longer ours) ends the attempts."""
        self.delivering = True
        beater: asyncio.Task[Heartbeat] | None = None  # only once an attempt failed: most succeed at once
        backoff = self._backoff()
        refused, replaced, lost, attempt = 0, False, False, 0
        try:
            while True:
                attempt += 1
                accepted: bool | None = None
                try:
                    # Lines first: once the job is complete they are not taken any more. While they cannot be
                    # sent, the completion waits too (the flush logged the fault and kept the lines).
                    if not logs.lines or await logs.flush():
                        accepted = await self.queue.complete(job_id, self.worker_id, outcome)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if self.transient(exc):
                        self.fault.failed(exc, worker_id=self.worker_id, job_id=str(job_id))
                    else:
                        refused += 1
                        log.error(
                            "daemon.complete_failed",
                            job_id=str(job_id),
                            worker_id=self.worker_id,
                            attempt=attempt,
                            error=str(exc),
                        )
                        if refused >= MAX_REFUSED_COMPLETIONS:
                            if replaced:
                                log.error(
                                    "daemon.outcome_dropped", job_id=str(job_id), worker_id=self.worker_id
                                )
                                return False
                            # The queue cannot take this outcome: report a failure that says why, keeping
                            # the state so that the workspace's delete can still clean up.
                            outcome = JobOutcome(
                                error=f"the queue refused the job's outcome: {exc}",
                                failure_class=FailureClass.INFRASTRUCTURE,
                                state=outcome.state,
                            )
                            refused, replaced = 0, True
                if accepted is None:
                    delay = backoff.next()
                    log.debug("daemon.complete_retry", job_id=str(job_id), attempt=attempt, delay=delay)
                    if beater is None:
                        beater = asyncio.create_task(self._heartbeat(job_id, None))
                    await asyncio.wait({beater}, timeout=delay)
                    if beater.done() and not lost:
                        # Lost, or completed by an attempt whose answer never came back: one more attempt
                        # tells which (a repeated completion is accepted), without waiting.
                        lost = True
                        continue
                    if beater.done():
                        log.warning(
                            "daemon.job_lost",
                            job_id=str(job_id),
                            worker_id=self.worker_id,
                            reason="lost while its outcome was being delivered",
                        )
                        return False
                    continue
                self.fault.recovered(worker_id=self.worker_id)
                if not accepted:
                    log.warning(
                        "daemon.complete_refused",
                        job_id=str(job_id),
                        worker_id=self.worker_id,
                        reason="the job is no longer this daemon's (failed as stale, or for a restart)",
                    )
                return accepted
        finally:
            self.delivering = False
            if beater is not None:
                beater.cancel()

    async def _heartbeat(self, job_id: uuid.UUID, runner: asyncio.Task[JobOutcome] | None) -> Heartbeat:
        """Beat until the job is lost, or (while ``runner`` runs it) canceled; a failed beat is tolerable, the
        stale timeout is much longer. Once the job has finished (no runner), a cancel changes nothing: its
        outcome is still delivered."""
        while True:
            await asyncio.sleep(self.options.heartbeat_interval)
            try:
                beat = await self.queue.heartbeat(job_id, self.worker_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed("heartbeat", exc)
                continue
            if not self.delivering:
                self.fault.recovered(worker_id=self.worker_id)
            if beat is Heartbeat.LOST or (beat is Heartbeat.CANCELED and runner is not None):
                log.info("daemon.job_stopping", job_id=str(job_id), reason=beat.value)
                if runner is not None:
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
            if not files.exists():  # in a thread: a 10 MiB archive must not hold the server's event loop
                await asyncio.to_thread(unpack_archive, job.source, files)
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
