"""The one process runner of the provisioners: a child in its own session, its output streamed line by line, a
deadline, cancellation by signalling its process group, and no leftover processes.

The exec provisioner (one script) and the Terraform provisioner (one ``terraform`` command) both run their child
through ``run_process``. The child starts a session of its own so that its whole process group (a script's
children, Terraform's provider plugins and ``local-exec`` commands) can be signalled: a timeout or a cancellation
interrupts the group (SIGINT, what Ctrl-C does), waits the grace period, then kills it. Processes left running in
the group when the child exits are killed too (something long-lived must detach into its own session, e.g.
``setsid``). Output is read at the pace of the consumer: reading pauses while many lines wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prebuildd.domain import limits
from prebuildd.provisioner.base import LogSink

MAX_LINE_BYTES = limits.LOG_LINE.maximum
"""A longer line without a newline is passed on in pieces of this size (the server's limit on a log line)."""
_PAUSE_AT = 1000
_RESUME_AT = 100
"""Queued output lines at which reading the child's pipes pauses / resumes (the consumer sets the pace)."""
DRAIN_SECONDS = 2.0
"""After the child exits, how long to wait for its pipes to close (a detached process may hold them)."""

LineHandler = Callable[[str, str], Awaitable[None]]
"""Called with ``("info", text)`` for a stdout line and ``("error", text)`` for a stderr line, in arrival order."""


class SpawnError(Exception):
    """The child could not be started; ``error`` is why (nothing ran)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class ProcessExit:
    returncode: int | None
    """Negative: killed by that signal."""
    timed_out: bool
    """The deadline passed: the group was interrupted, then killed."""


@dataclass(frozen=True)
class Warnings:
    """What the log says, at ``warn``, when the child leaves something behind (worded by each provisioner)."""

    leftover_processes: str
    output_still_open: str


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def group_left_running(pgid: int, settle: float = 1.0) -> bool:
    """Whether processes are still in the child's group after it exited, once ``settle`` seconds have let any
    that are detaching (`setsid cmd &` forks first, then leaves the group) finish leaving it."""
    deadline = asyncio.get_running_loop().time() + settle
    while _group_has_live_members(pgid):
        if asyncio.get_running_loop().time() >= deadline:
            return True
        await asyncio.sleep(0.02)
    return False


def _group_has_live_members(pgid: int) -> bool:
    """Whether a process of the group is still running (zombies waiting to be reaped do not count).

    Reads ``/proc`` where there is one; elsewhere any member counts.
    """
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = text[text.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


_Line = tuple[str, str]
"""(source, text): source is "info" (stdout) or "error" (stderr)."""


class _LineProtocol(asyncio.SubprocessProtocol):
    """Splits the child's stdout/stderr into lines, in arrival order, and tells when the child exits.

    ``Process.wait()`` of Python 3.11 also waits for the pipes to close, which a background process can hold
    open forever; this protocol reports the exit itself.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.lines: asyncio.Queue[_Line | None] = asyncio.Queue()
        self._buffers: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
        self._transport: asyncio.SubprocessTransport | None = None
        self._paused = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._transport = transport

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        buffer = self._buffers[fd]
        buffer.extend(data)
        while True:
            end = buffer.find(b"\n", 0, MAX_LINE_BYTES + 1)
            if end >= 0:
                self._emit(fd, bytes(buffer[:end]))
                del buffer[: end + 1]
            elif len(buffer) >= MAX_LINE_BYTES:
                self._emit(fd, bytes(buffer[:MAX_LINE_BYTES]))
                del buffer[:MAX_LINE_BYTES]
            else:
                break
        if not self._paused and self.lines.qsize() >= _PAUSE_AT:
            self._set_reading(False)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        buffer = self._buffers.get(fd)
        if buffer:
            self._emit(fd, bytes(buffer))
            buffer.clear()

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self.lines.put_nowait(None)

    # for the consumer

    def line_taken(self) -> None:
        if self._paused and self.lines.qsize() <= _RESUME_AT:
            self._set_reading(True)

    def _emit(self, fd: int, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").removesuffix("\r")
        self.lines.put_nowait(("info" if fd == 1 else "error", text))

    def _set_reading(self, reading: bool) -> None:
        if self._transport is None:
            return
        self._paused = not reading
        for fd in (1, 2):
            pipe = self._transport.get_pipe_transport(fd)
            if isinstance(pipe, asyncio.ReadTransport) and not pipe.is_closing():
                if reading:
                    pipe.resume_reading()
                else:
                    pipe.pause_reading()


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    on_line: LineHandler,
    log: LogSink,
    stage: str,
    deadline: float | None,
    grace_seconds: float,
    warnings: Warnings,
) -> ProcessExit:
    """Run ``argv`` to its exit (or to ``deadline``, a loop time), passing each output line to ``on_line``.

    Raises ``SpawnError`` when it cannot start. A cancellation, or a failing ``on_line``, stops the group (grace
    period, then kill) before the exception goes through.
    """
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _LineProtocol(loop),
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        raise SpawnError(exc) from None
    pgid = transport.get_pid()
    forwarder = asyncio.create_task(_forward(protocol, on_line), name=f"process-output-{stage}")
    finished = False
    timed_out = False
    try:
        timer = asyncio.timeout_at(deadline)
        try:
            async with timer:
                await asyncio.wait({protocol.exited, forwarder}, return_when=asyncio.FIRST_COMPLETED)
                if forwarder.done() and not forwarder.cancelled() and forwarder.exception() is not None:
                    forwarder.result()  # the consumer failed: fail the run now
        except TimeoutError:
            if not timer.expired():
                raise
            timed_out = True
            await _stop(protocol, pgid, grace_seconds)
        else:
            leftovers = await group_left_running(pgid)
            if signal_group(pgid, signal.SIGKILL) and leftovers:
                await log("warn", stage, warnings.leftover_processes)
        await _drain(transport, protocol, forwarder, log, stage, warnings.output_still_open)
        finished = True
    finally:
        if not finished:
            # Canceled, or the consumer failed: stop the child before letting the exception through.
            await _stop(protocol, pgid, grace_seconds)
        transport.close()
        if not forwarder.done():
            forwarder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await forwarder
    return ProcessExit(transport.get_returncode(), timed_out)


async def _forward(protocol: _LineProtocol, on_line: LineHandler) -> None:
    while True:
        item = await protocol.lines.get()
        protocol.line_taken()
        if item is None:
            return
        await on_line(*item)


async def _stop(protocol: _LineProtocol, pgid: int, grace_seconds: float) -> None:
    """Interrupt the process group, give the child the grace period, then kill the group."""
    try:
        if not protocol.exited.done() and signal_group(pgid, signal.SIGINT):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_seconds):
                    await asyncio.shield(protocol.exited)
    finally:
        signal_group(pgid, signal.SIGKILL)


async def _drain(
    transport: asyncio.SubprocessTransport,
    protocol: _LineProtocol,
    forwarder: asyncio.Task[None],
    log: LogSink,
    stage: str,
    still_open: str,
) -> None:
    """Pass on what is left of the output once the child is gone."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            await asyncio.shield(protocol.closed)
    if not protocol.closed.done():
        await log("warn", stage, still_open)
        transport.close()
    await forwarder
