"""The job queue as daemons see it: acquire, heartbeat, log, complete.

``JobQueue`` is the one interface a daemon uses, so the same daemon runs inside the server (``PgJobQueue``, on
the database) or on another machine (``HttpJobQueue``, over the HTTP API with a provisioner key). This module is
the port: plain dataclasses and a protocol, importable without a database driver.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

from prebuildd.domain.jobs import FailureClass, JobType, Transition
from prebuildd.domain.parameters import ParameterSpec


@dataclass(frozen=True)
class BuildPayload:
    build_id: UUID
    build_number: int
    transition: Transition
    reason: str
    parameters: Mapping[str, str]
    state: bytes | None
    workspace_id: UUID
    workspace_name: str
    owner_id: UUID
    owner_name: str
    template_name: str
    version_id: UUID
    preset_name: str | None
    is_prebuild: bool
    agent_tokens: Mapping[str, str] = field(default_factory=dict)
    """Start builds: a fresh token per declared agent (a claim step keeps the running agents' tokens)."""


@dataclass(frozen=True)
class AcquiredJob:
    id: UUID
    type: JobType
    provisioner: str
    manifest: str
    source: bytes
    source_hash: str
    build: BuildPayload | None = None
    version_id: UUID | None = None


LOG_LEVELS = ("trace", "debug", "info", "warn", "error")
"""The levels a job's log line may have (the ``job_logs.level`` CHECK constraint)."""


@dataclass(frozen=True)
class LogLine:
    level: str
    stage: str
    output: str


def storable_log_text(text: str) -> str:
    """``text`` as PostgreSQL can store it: NUL and lone surrogates (a build's binary output, a daemon's
    undecodable bytes) become U+FFFD. A build's log is kept, marked, rather than refused: the bytes carried no
    text, and refusing them would lose every line around them (and once failed the request with a 500)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    return text


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended, as its daemon reports it."""

    error: str | None = None
    failure_class: FailureClass | None = None
    canceled: bool = False
    state: bytes | None = None
    outputs: Mapping[str, Any] = field(default_factory=dict)
    parameters: tuple[ParameterSpec, ...] = ()
    """Import jobs: the declared parameters after the provisioner's import."""
    warnings: tuple[str, ...] = ()


class Heartbeat(StrEnum):
    OK = "ok"
    CANCELED = "canceled"
    """The job was canceled: stop it and complete it."""
    LOST = "lost"
    """The job is no longer ours (failed as stale, or completed): stop it and report nothing."""


class JobQueue(Protocol):
    """What a daemon needs of the queue. An adapter may also have ``dependency`` (a str: what the daemon loses
    when calls fail, "database" by default, for its outage log lines) and ``is_transient(exc) -> bool`` (whether
    a failed call is worth retrying without limit; every failure is, by default)."""

    async def register(self, identity: str, worker_id: str) -> list[UUID]:
        """A daemon starts as ``worker_id`` (``<identity>#<run>``): fail at once, as lost, the jobs that earlier
        runs of the same identity still hold (they died with that run); returns their ids."""
        ...

    async def acquire(
        self, worker_id: str, kinds: Sequence[str], tags: Mapping[str, str]
    ) -> AcquiredJob | None: ...

    async def wait_for_jobs(
        self,
        timeout: float,
        *,
        kinds: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
        worker_id: str | None = None,
    ) -> None:
        """Return when new jobs may be there, or after ``timeout`` seconds. ``kinds`` and ``tags`` (what the
        waiter runs) let a queue wake only the waiters a job fits, and ``worker_id`` (the name the waiter
        acquires with) lets it keep the waiters' turns. A queue with ``wakes_waiters = True`` returns
        whenever there is work (it polls for all its waiters), so that a daemon need not poll on its own."""
        ...

    async def heartbeat(self, job_id: UUID, worker_id: str) -> Heartbeat: ...

    async def append_logs(self, job_id: UUID, worker_id: str, lines: Sequence[LogLine]) -> None: ...

    async def complete(self, job_id: UUID, worker_id: str, outcome: JobOutcome) -> bool:
        """Record the end of the job; False when the job was no longer this worker's (failed as stale or for a
        restart, completed by another). Idempotent: a second call by the worker that completed it is True and
        writes nothing."""
        ...
