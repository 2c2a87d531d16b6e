"""The job queue on PostgreSQL: ``FOR UPDATE SKIP LOCKED``, human jobs first, LISTEN/NOTIFY wake-ups.

Operator operations (cancel, failing stale jobs, reading logs) live here only, not on the daemon's port. Every
statement is a function of ``prebuildd.store.jobs``; this module decides what to run, in which transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from uuid import UUID

import structlog

from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.domain.jobs import BuildReason, FailureClass, JobType, Transition
from prebuildd.domain.manifest import ManifestError
from prebuildd.domain.secrets import AGENT_TOKEN_PREFIX, new_secret, secret_hash
from prebuildd.queue.port import (
    AcquiredJob,
    BuildPayload,
    Heartbeat,
    JobOutcome,
    LogLine,
    storable_log_text,
)
from prebuildd.runtime.clock import Clock
from prebuildd.runtime.metrics import Metrics
from prebuildd.store import channels
from prebuildd.store import jobs as store
from prebuildd.store.claims import claim_build_labels
from prebuildd.store.db import Conn, Database
from prebuildd.store.errors import StoreError, StoreTimeout, StoreUnavailable
from prebuildd.store.jobs import AcquiredJobRow, BuildForJob, CompletedBuild, Completion, JobLogLine
from prebuildd.store.listener import Listener
from prebuildd.templates.versions import record_import

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class _Waiter:
    """An idle daemon (or a daemon's long poll) waiting for a job it may run."""

    kinds: frozenset[str]
    """Empty: any provisioner."""
    tags: dict[str, str] | None
    """None: any tags."""
    woken: asyncio.Future[None]
    worker_id: str | None = None


def _runs(provisioner: str, waiter: _Waiter) -> bool:
    return not waiter.kinds or provisioner in waiter.kinds


def _fits(waiter: _Waiter, pending: store.PendingKind) -> bool:
    offered = waiter.tags
    return _runs(pending.provisioner, waiter) and (
        offered is None or all(offered.get(k) == v for k, v in pending.tags.items())
    )


def _fits_any(pending: Sequence[store.PendingKind], waiter: _Waiter) -> bool:
    return any(_fits(waiter, p) for p in pending)


WAKE_PER_NOTIFICATION = 2
"""Idle daemons a queued job's notification wakes (the oldest waiters it fits). Waking every idle daemon made
them all race for the one job: with 64 idle daemons, 63 empty acquires per job, and the winner's pick-up waited
behind them. Each daemon that takes a job wakes one more (a notification may stand for many jobs: PostgreSQL
sends one per transaction and payload), and one that was woken and found nothing waits first in line."""


_MAX_TRACKED = 4096
"""Workers remembered as woken or as having lost a race (daemons that went away leave their names behind)."""


def _queued_kind(payload: str) -> store.PendingKind | None:
    """The job a notification names: its provisioner, then its tags (JSON) on a second line when it has any.
    None when the tags are not there to read (``*``: too long for a notification): any idle daemon may fit."""
    provisioner, _, tags = payload.partition("\n")
    if not tags:
        return store.PendingKind(provisioner, {})
    try:
        parsed = json.loads(tags)
    except ValueError:
        return None
    return store.PendingKind(provisioner, parsed) if isinstance(parsed, dict) else None


class PgJobQueue:
    """The queue on PostgreSQL: ``FOR UPDATE SKIP LOCKED``, human jobs first, LISTEN/NOTIFY wake-ups."""

    dependency = "database"
    """What a daemon on this queue loses when calls fail (its outage log lines name it)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        listener: Listener | None = None,
        metrics: Metrics | None = None,
        *,
        poll_interval: float = 2.0,
    ) -> None:
        self.db = db
        self.clock = clock
        self.listener = listener
        self.metrics = metrics
        """Where the end of a claim build is observed (None: not observed)."""
        self.poll_interval = poll_interval
        """How often the process looks for pending jobs while daemons wait (one statement, whatever their
        number)."""
        self._waiters: list[_Waiter] = []
        self._woken: set[str] = set()
        """Workers woken by the queue whose acquire has not come back yet."""
        self._raced: set[str] = set()
        """Workers that were woken and found nothing (another daemon took the job): first in line next time."""
        self._poller: asyncio.Task[None] | None = None
        self._listening = False

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        """A failure that retrying can fix: the database is away or slow (not a statement it refused)."""
        return isinstance(exc, StoreUnavailable | StoreTimeout | OSError | TimeoutError)

    async def register(self, identity: str, worker_id: str) -> list[UUID]:
        """A daemon starts as ``worker_id`` (``<identity>#<run>``): the jobs earlier runs of its identity still
        hold fail at once (class daemon_lost), instead of after the stale timeout."""
        return await self.fail_earlier_runs(identity, worker_id)

    async def fail_earlier_runs(
        self,
        identity: str,
        worker_id: str,
        *,
        key_suffix: str | None = None,
        organization_id: UUID | None = None,
    ) -> list[UUID]:
        """``register`` for embedded daemons (``key_suffix`` None) and, bound to their provisioner key and its
        organization, for standalone ones (the daemon routes)."""
        async with self.db.transaction() as conn:
            failed = await store.fail_earlier_runs(
                conn,
                identity,
                worker_id,
                self.clock.now(),
                key_suffix=key_suffix,
                organization_id=organization_id,
            )
            for job in failed:
                await store.notify_completed(conn, job.id, job.type.value, job.workspace_id)
        for job in failed:
            log.warning(
                "job.failed_daemon_restarted", job_id=str(job.id), identity=identity, worker_id=worker_id
            )
        return [job.id for job in failed]

    async def acquire(
        self,
        worker_id: str,
        kinds: Sequence[str],
        tags: Mapping[str, str],
        *,
        organization_id: UUID | None = None,
    ) -> AcquiredJob | None:
        """One statement in autocommit takes the job with everything it runs (one round trip); a start build
        with agents then gets their tokens in one more statement. If that fails, the job goes back to the queue
        before the error is raised, so that no job stays held by a daemon that never saw it. ``organization_id``
        (a standalone daemon's key) filters in the statement itself, so nothing is done for a foreign job."""
        now = self.clock.now()
        async with self.db.autocommit() as conn:
            job = await store.acquire(
                conn, worker_id, kinds, tags, now, PREBUILDS_USER_ID, organization_id=organization_id
            )
        if worker_id in self._woken:
            self._woken.discard(worker_id)
            if job is None:
                if len(self._raced) >= _MAX_TRACKED:
                    self._raced.clear()
                self._raced.add(worker_id)
        if job is None:
            return None
        self._raced.discard(worker_id)
        if self._waiters:  # there may be more where this one came from: pass the wake-up on
            self._wake(functools.partial(_runs, job.provisioner), limit=1)
        try:
            acquired = self._payload(job)
            if acquired.build is not None and job.build is not None:
                tokens = await self._agent_tokens(job.build)
                if tokens:
                    acquired = replace(acquired, build=replace(acquired.build, agent_tokens=tokens))
        except BaseException:
            with contextlib.suppress(Exception):  # not released: the stale-job reaper fails it later
                await self.release(job.id, worker_id)
            raise
        return acquired

    @staticmethod
    def _payload(job: AcquiredJobRow) -> AcquiredJob:
        if job.manifest is None or job.source is None or job.source_hash is None or job.version_id is None:
            raise _inconsistent(f"job {job.id} has no template version")
        if job.type is JobType.TEMPLATE_VERSION_IMPORT:
            return AcquiredJob(
                job.id,
                job.type,
                job.provisioner,
                job.manifest,
                job.source,
                job.source_hash,
                version_id=job.version_id,
            )
        job_build = job.build
        if job_build is None:
            raise _inconsistent(f"build job {job.id} has no build")
        build = BuildPayload(
            build_id=job_build.build_id,
            build_number=job_build.build_number,
            transition=Transition(job_build.transition),
            reason=job_build.reason,
            parameters=job_build.parameters,
            state=job_build.previous_state,
            workspace_id=job_build.workspace_id,
            workspace_name=job_build.workspace_name,
            owner_id=job_build.owner_id,
            owner_name=job_build.owner_name,
            template_name=job_build.template_name,
            version_id=job_build.version_id,
            preset_name=job_build.preset_name,
            is_prebuild=job_build.is_prebuild,
        )
        return AcquiredJob(
            job.id,
            job.type,
            job.provisioner,
            job_build.manifest,
            job_build.source,
            job_build.source_hash,
            build=build,
            version_id=job_build.version_id,
        )

    async def _agent_tokens(self, job_build: BuildForJob) -> dict[str, str]:
        if job_build.transition != Transition.START or job_build.reason == "claim" or not job_build.agents:
            return {}
        tokens = {name: new_secret(AGENT_TOKEN_PREFIX) for name in job_build.agents}
        async with self.db.autocommit() as conn:
            await store.issue_agent_tokens(
                conn,
                job_build.workspace_id,
                list(tokens),
                [secret_hash(token) for token in tokens.values()],
                self.clock.now(),
            )
        return tokens

    async def wait_for_jobs(
        self,
        timeout: float,
        *,
        kinds: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
        worker_id: str | None = None,
    ) -> None:
        """Wait until a job this waiter may run is queued, or ``timeout``. Without a listener: the timeout (the
        caller polls). With one, a queued job's notification wakes the oldest waiters it fits (a few, see
        ``WAKE_PER_NOTIFICATION``), and one poll per process, not per waiter, every ``poll_interval`` wakes the
        waiters that pending jobs fit (a notification lost, a job a woken daemon could not take, an earlier
        outage). ``worker_id`` (the waiter's ``acquire`` name) puts a waiter that lost a race first in line."""
        if self.listener is None:
            await asyncio.sleep(timeout)
            return
        offered = None if tags is None else dict(tags)
        waiter = _Waiter(frozenset(kinds), offered, asyncio.get_running_loop().create_future(), worker_id)
        if worker_id is not None and worker_id in self._raced:
            self._raced.discard(worker_id)
            self._waiters.insert(0, waiter)
        else:
            self._waiters.append(waiter)
        self._ensure_poller()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await waiter.woken
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    @property
    def waiting(self) -> int:
        """Waiters (idle daemons, long polls) waiting for a job now."""
        return len(self._waiters)

    @property
    def wakes_waiters(self) -> bool:
        """Whether ``wait_for_jobs`` returns when there is work (a listener and the process's poll): a daemon
        may then wait long between its own acquires."""
        return self.listener is not None

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel != channels.JOB_QUEUED:
            return
        if not payload:  # the listener is back after an outage: whatever was queued meanwhile, look now
            self._wake(lambda w: True)
            return
        kind = _queued_kind(payload)
        if kind is None:  # tags too long to send, or not a payload of ours: wake everyone, as a poll would
            self._wake(lambda w: True)
            return
        # The oldest idle daemons it fits, a few of them (a daemon that lost a race for the last one is first):
        # every idle daemon gets its turn, and a daemon that never gets a job can still be told from a lost one.
        self._wake(functools.partial(_fits_any, [kind]), limit=WAKE_PER_NOTIFICATION)

    def _wake(self, fits: Callable[[_Waiter], bool], limit: int | None = None) -> int:
        woken = 0
        for waiter in list(self._waiters):  # oldest first
            if limit is not None and woken >= limit:
                break
            if not waiter.woken.done() and fits(waiter):
                waiter.woken.set_result(None)
                self._waiters.remove(waiter)
                if waiter.worker_id is not None:
                    if len(self._woken) >= _MAX_TRACKED:  # workers that went away: a hint, not a ledger
                        self._woken.clear()
                    self._woken.add(waiter.worker_id)
                woken += 1
        return woken

    def _ensure_poller(self) -> None:
        if self.listener is not None and not self._listening:
            self.listener.add_handler(self._on_notify)
            self._listening = True
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="job-queue-poll")

    async def _poll(self) -> None:
        """The process's one poll, while anyone waits: which pending jobs' provisioners and tags fit a waiter."""
        while self._waiters:
            await asyncio.sleep(self.poll_interval)
            if not self._waiters:
                return
            try:
                async with self.db.autocommit() as conn:
                    pending = await store.pending_kinds(conn)
            except Exception:  # the database is away: the waiters find out on their own calls, and report it
                self._wake(lambda w: True)
                continue
            if pending:
                self._wake(functools.partial(_fits_any, pending))

    async def heartbeat(self, job_id: UUID, worker_id: str) -> Heartbeat:
        async with self.db.transaction() as conn:
            canceled = await store.heartbeat(conn, job_id, worker_id, self.clock.now())
        if canceled is None:
            return Heartbeat.LOST
        return Heartbeat.CANCELED if canceled else Heartbeat.OK

    async def append_logs(self, job_id: UUID, worker_id: str, lines: Sequence[LogLine]) -> None:
        if not lines:
            return
        now = self.clock.now()
        async with self.db.transaction() as conn:
            await store.append_logs(
                conn,
                job_id,
                worker_id,
                now,
                levels=[line.level for line in lines],
                stages=[storable_log_text(line.stage) for line in lines],
                outputs=[storable_log_text(line.output) for line in lines],
            )

    async def complete(self, job_id: UUID, worker_id: str, outcome: JobOutcome) -> bool:
        error = outcome.error
        failure_class = outcome.failure_class
        if outcome.canceled:
            error, failure_class = None, None
        elif error and failure_class is None:
            failure_class = FailureClass.BUILD
        elif failure_class is FailureClass.DAEMON_LOST:
            # Only the queue fails jobs for a lost daemon; a daemon reporting it would read as not its own
            # completion when it repeats it.
            failure_class = FailureClass.INFRASTRUCTURE
        completion = Completion(job_id, worker_id, self.clock.now(), error, failure_class)
        # Most completions are builds: one statement, its own transaction, one round trip instead of five
        # (bench/queue_throughput.py). Anything else (imports, a job no longer ours, a repeated completion)
        # takes the general path.
        async with self.db.autocommit() as conn:
            completed = await store.complete_build(conn, completion, outcome.state, outcome.outputs)
        if completed is not None:
            log.info("job.completed", job_id=str(job_id), status=completed.status, error=error)
            if completed.reason == BuildReason.CLAIM.value:
                await self._claim_build_finished(job_id, completed, completion.now)
            return True
        return await self._complete(completion, outcome)

    async def _claim_build_finished(self, job_id: UUID, completed: CompletedBuild, now: datetime) -> None:
        """Time the claim build (its job was queued by the claim). The completion has committed: a failure to
        observe it is logged, never the completion's."""
        seconds = (now - completed.created_at).total_seconds()
        log.info(
            "claim.build_finished", job_id=str(job_id), status=completed.status, seconds=round(seconds, 3)
        )
        if self.metrics is None:
            return
        try:
            async with self.db.autocommit() as conn:
                labels = await claim_build_labels(conn, job_id)
        except StoreError as exc:
            log.warning("claim.build_metrics_failed", job_id=str(job_id), error=str(exc))
            return
        if labels is not None:
            self.metrics.claim_build_finished(labels, seconds, completed.status)

    async def _complete(self, completion: Completion, outcome: JobOutcome) -> bool:
        job_id, now = completion.job_id, completion.now
        async with self.db.transaction() as conn:
            job = await store.complete(conn, completion)
            if job is None and await store.completed_by_worker(conn, job_id, completion.worker_id):
                # The first completion committed but its answer was lost: accepted again, nothing written.
                log.info("job.complete_repeated", job_id=str(job_id), worker_id=completion.worker_id)
                return True
            if job is None:
                log.warning(
                    "job.complete_refused",
                    job_id=str(job_id),
                    worker_id=completion.worker_id,
                    reason="job is no longer held by this worker",
                )
                return False
            if job.type == JobType.TEMPLATE_VERSION_IMPORT and job.job_status == "succeeded":
                manifest_error = await self._record_import(conn, job_id, outcome)
                if manifest_error is not None:
                    # The import ran but its result does not fit the manifest: the version fails to import.
                    await store.set_error(conn, job_id, str(manifest_error), FailureClass.CONFIG, now)
            if job.type == JobType.WORKSPACE_BUILD and job.job_status == "succeeded":
                await self._finish_build(conn, job_id, outcome)
            elif job.type == JobType.WORKSPACE_BUILD and outcome.state is not None:
                await store.keep_failed_state(conn, job_id, outcome.state, now)
            await store.notify_completed(conn, job_id, job.type.value, job.workspace_id)
        log.info("job.completed", job_id=str(job_id), status=job.job_status, error=completion.error)
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
        build = await store.finish_build(conn, job_id, outcome.state, outcome.outputs, now)
        if build is None:
            raise _inconsistent(f"build job {job_id} has no build")
        if build.transition == Transition.DELETE:
            await store.mark_workspace_deleted(conn, build.workspace_id, now)

    # -- operator operations -------------------------------------------------------------------------------

    async def cancel(self, job_id: UUID) -> str | None:
        """Cancel a job: a pending one never starts; a running one is stopped by its daemon. Returns its status."""
        async with self.db.transaction() as conn:
            status = await store.cancel(conn, job_id, self.clock.now())
            if status == "canceled":
                await store.notify_completed(conn, job_id, None, None)
        return status

    async def release(self, job_id: UUID, worker_id: str) -> bool:
        """Put a job interrupted by a shutdown back in the queue (it runs again from the start)."""
        async with self.db.transaction() as conn:
            return await store.release(conn, job_id, worker_id, self.clock.now())

    async def fail_stale(self, stale_after: timedelta) -> list[UUID]:
        """Fail running jobs whose daemon has not sent a heartbeat for ``stale_after`` (class daemon_lost)."""
        now = self.clock.now()
        async with self.db.transaction() as conn:
            stale = await store.fail_stale(conn, now, now - stale_after)
            for job in stale:
                await store.notify_completed(conn, job.id, job.type.value, job.workspace_id)
        for job in stale:
            log.warning("job.failed_stale", job_id=str(job.id))
        return [job.id for job in stale]

    async def logs(self, job_id: UUID, after: int = 0, limit: int = 1000) -> list[JobLogLine]:
        async with self.db.transaction() as conn:
            return await store.logs_after(conn, job_id, after, limit)


def _inconsistent(message: str) -> PrebuilddError:
    """A job whose build or version is missing: the database broke an invariant the queue relies on."""
    return PrebuilddError(ErrorCode.INTERNAL, message)
