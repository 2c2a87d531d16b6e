"""The ``exec`` provisioner: runs the template's ``create``/``start``/``stop``/``delete``/``claim`` scripts.

A script runs as a real child process in its own session (so its whole process group can be signalled), with
the template files as its working directory and an environment built from the build: parameters as
``PREBUILDD_PARAM_<NAME>``, workspace facts as ``PREBUILDD_*``, a state file it may rewrite and an outputs
file it may fill with a JSON object. Its output is streamed line by line to the job log as it comes.

Nothing outlives a build: processes the script leaves running in its process group are killed when it exits
(a script that must start a long-lived process detaches it into its own session, e.g. ``setsid``); a timeout
or a cancellation interrupts the group (SIGINT), waits a grace period for the script, then kills the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prebuildd.domain.durations import format_duration
from prebuildd.domain.jobs import FailureClass
from prebuildd.domain.manifest import EXEC_SCRIPTS, MANIFEST_FILE, ExecConfig
from prebuildd.provisioner.base import (
    BuildContext,
    BuildResult,
    ImportContext,
    ImportResult,
    LogSink,
    ProvisionerFailure,
)

DEFAULT_GRACE_SECONDS = 10.0
"""How long an interrupted script may take to exit before its process group is killed."""

TAIL_LINES = 10
"""Output lines quoted in the error of a failed script."""

INHERITED_ENV = ("PATH", "HOME", "LANG", "TMPDIR")
"""The only variables of the daemon's environment a script sees."""

_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_MAX_LINE_BYTES = 64 * 1024
"""A longer line without a newline is logged in pieces of this size."""
_PAUSE_AT = 1000
_RESUME_AT = 100
"""Queued output lines at which reading the script's pipes pauses / resumes (the log sink sets the pace)."""
_DRAIN_SECONDS = 2.0
"""After the script exits, how long to wait for its pipes to close (a detached process may hold them)."""


class ExecProvisioner:
    """Runs one template script per build as a child process; see the module docstring."""

    kind: str = "exec"

    def __init__(self, *, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> None:
        self.grace_seconds = grace_seconds

    async def run_build(self, ctx: BuildContext, log: LogSink) -> BuildResult:
        config = _exec_config(ctx.manifest.exec)
        step = "claim" if ctx.is_claim else ctx.transition.value
        first_build = ctx.build_number == 1
        script = config.script_for(step, first_build=first_build)
        if script is None:
            await log("info", step, f"no exec script for `{step}`: nothing to do")
            return BuildResult(state=ctx.state)
        key = _script_key(config, step, first_build)
        path = _script_path(ctx.files_dir, script, key)

        scratch = Path(tempfile.mkdtemp(prefix="prebuildd-exec-"))
        try:
            state_file = scratch / "state"
            outputs_file = scratch / "outputs.json"
            data_dir = ctx.data_dir if ctx.data_dir is not None else scratch / "data"
            _prepare_files(state_file, ctx.state, outputs_file, data_dir)
            env = _build_env(ctx, data_dir=data_dir, state_file=state_file, outputs_file=outputs_file)
            run = _ScriptRun(
                script=script,
                path=path,
                cwd=ctx.files_dir,
                env=env,
                stage=key,
                log=log,
                timeout=config.timeout_seconds,
                grace_seconds=self.grace_seconds,
            )
            try:
                await run.run()
            except ProvisionerFailure as failure:
                # Keep what the script wrote to its state file before failing: the next build needs it.
                written = state_file.read_bytes() if state_file.exists() else b""
                if written and written != (ctx.state or b""):
                    failure.state = written
                raise
            state, outputs = _read_results(state_file, outputs_file, script)
            return BuildResult(state=state, outputs=outputs)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    async def import_version(self, ctx: ImportContext, log: LogSink) -> ImportResult:
        config = _exec_config(ctx.manifest.exec)
        for key in EXEC_SCRIPTS:
            script = getattr(config, key)
            if script is None:
                continue
            _script_path(ctx.files_dir, script, key)
            await log("debug", "import", f"exec.{key}: {script} found")
        return ImportResult(parameters=ctx.manifest.parameters)


# --- the pieces --------------------------------------------------------------------------------------


def _exec_config(config: ExecConfig | None) -> ExecConfig:
    if config is None:
        raise ProvisionerFailure(f'{MANIFEST_FILE}: exec: section is required when provisioner = "exec"')
    return config


def _script_key(config: ExecConfig, step: str, first_build: bool) -> str:
    """The manifest key (``create``, ``start``, ...) of the script :meth:`ExecConfig.script_for` picked."""
    if step == "start" and first_build and config.create is not None:
        return "create"
    return step


def _script_path(files_dir: Path, script: str, key: str) -> Path:
    """The script's file inside the template, or a failure naming the manifest key and the file."""
    where = f"{MANIFEST_FILE}: exec.{key}"
    root = files_dir.resolve()
    path = (files_dir / script).resolve()
    if not path.is_relative_to(root):
        raise ProvisionerFailure(f"{where}: file {script} is outside the template directory")
    if not path.exists():
        raise ProvisionerFailure(f"{where}: file {script} not found in the template")
    if not path.is_file():
        raise ProvisionerFailure(f"{where}: {script} is not a regular file")
    return path


def _prepare_files(state_file: Path, state: bytes | None, outputs_file: Path, data_dir: Path) -> None:
    state_file.write_bytes(state or b"")
    outputs_file.write_bytes(b"")
    data_dir.mkdir(parents=True, exist_ok=True)


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _build_env(ctx: BuildContext, *, data_dir: Path, state_file: Path, outputs_file: Path) -> dict[str, str]:
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    env.setdefault("PATH", _DEFAULT_PATH)
    for name, value in ctx.parameters.items():
        env[f"PREBUILDD_PARAM_{name.upper()}"] = value
    env.update(
        {
            "PREBUILDD_WORKSPACE_ID": ctx.workspace_id,
            "PREBUILDD_WORKSPACE_NAME": ctx.workspace_name,
            "PREBUILDD_WORKSPACE_OWNER": ctx.owner_name,
            "PREBUILDD_WORKSPACE_OWNER_ID": ctx.owner_id,
            "PREBUILDD_TEMPLATE": ctx.template_name,
            "PREBUILDD_TEMPLATE_VERSION_ID": ctx.version_id,
            "PREBUILDD_TRANSITION": ctx.transition.value,
            "PREBUILDD_BUILD_NUMBER": str(ctx.build_number),
            "PREBUILDD_PRESET": ctx.preset_name or "",
            "PREBUILDD_IS_PREBUILD": _flag(ctx.is_prebuild),
            "PREBUILDD_IS_CLAIM": _flag(ctx.is_claim),
            "PREBUILDD_ACCESS_URL": ctx.access_url,
            "PREBUILDD_DATA_DIR": str(data_dir),
            "PREBUILDD_STATE_FILE": str(state_file),
            "PREBUILDD_OUTPUTS_FILE": str(outputs_file),
        }
    )
    env.update(ctx.extra_env)
    return env


def _read_results(state_file: Path, outputs_file: Path, script: str) -> tuple[bytes | None, dict[str, Any]]:
    state = state_file.read_bytes() if state_file.exists() else b""
    text = outputs_file.read_text(encoding="utf-8", errors="replace") if outputs_file.exists() else ""
    outputs: dict[str, Any] = {}
    if text.strip():
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProvisionerFailure(
                f"{script}: PREBUILDD_OUTPUTS_FILE ({outputs_file.name}) is not valid JSON: {exc}"
            ) from None
        if not isinstance(decoded, dict):
            raise ProvisionerFailure(
                f"{script}: PREBUILDD_OUTPUTS_FILE ({outputs_file.name}) must hold a JSON object, "
                f"got {type(decoded).__name__}"
            )
        outputs = decoded
    return (state or None), outputs


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


async def group_left_running(pgid: int, settle: float = 1.0) -> bool:
    """Whether processes are still in the script's group after it exited, once ``settle`` seconds have let any
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


# --- one script run ---------------------------------------------------------------------------------


_Line = tuple[str, str]
"""(level, text)"""


class _ScriptProtocol(asyncio.SubprocessProtocol):
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
            end = buffer.find(b"\n", 0, _MAX_LINE_BYTES + 1)
            if end >= 0:
                self._emit(fd, bytes(buffer[:end]))
                del buffer[: end + 1]
            elif len(buffer) >= _MAX_LINE_BYTES:
                self._emit(fd, bytes(buffer[:_MAX_LINE_BYTES]))
                del buffer[:_MAX_LINE_BYTES]
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


@dataclass
class _ScriptRun:
    script: str
    path: Path
    cwd: Path
    env: Mapping[str, str]
    stage: str
    log: LogSink
    timeout: float | None
    grace_seconds: float

    def __post_init__(self) -> None:
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    async def run(self) -> None:
        """Run the script to completion; raise ProvisionerFailure unless it exits 0."""
        loop = asyncio.get_running_loop()
        transport, protocol = await self._spawn(loop)
        pgid = transport.get_pid()
        forwarder = asyncio.create_task(self._forward(protocol), name=f"exec-log-{self.stage}")
        finished = False
        try:
            deadline = asyncio.timeout(self.timeout)
            try:
                async with deadline:
                    await self._wait_exit(protocol, forwarder)
            except TimeoutError:
                if not deadline.expired():
                    raise
                await self._stop(protocol, pgid)
                await self._drain(transport, protocol, forwarder)
                finished = True
                raise ProvisionerFailure(
                    self._with_tail(f"{self.script} timed out after {format_duration(self.timeout or 0)}")
                ) from None
            leftovers = await group_left_running(pgid)
            if _signal_group(pgid, signal.SIGKILL) and leftovers:
                await self.log(
                    "warn",
                    self.stage,
                    f"{self.script} left processes running in its process group; they were killed "
                    "(detach long-lived processes into their own session, e.g. with setsid)",
                )
            await self._drain(transport, protocol, forwarder)
            finished = True
        finally:
            if not finished:
                # Canceled, or the log sink failed: stop the script before letting the exception through.
                await self._stop(protocol, pgid)
            transport.close()
            if not forwarder.done():
                forwarder.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await forwarder

        code = transport.get_returncode()
        if code != 0:
            raise ProvisionerFailure(self._with_tail(f"{self.script} exited with status {_describe(code)}"))

    async def _spawn(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[asyncio.SubprocessTransport, _ScriptProtocol]:
        direct = os.access(self.path, os.X_OK)
        argv = [str(self.path)] if direct else ["/bin/sh", str(self.path)]
        try:
            return await self._exec(loop, argv)
        except OSError as exc:
            if direct and exc.errno == errno.ENOEXEC:
                # An executable without a #! line: run it with the shell, as a shell would.
                with contextlib.suppress(OSError):
                    return await self._exec(loop, ["/bin/sh", str(self.path)])
            raise ProvisionerFailure(
                f"{self.script}: cannot run: {exc.strerror or exc}",
                FailureClass.BUILD,
            ) from None

    async def _exec(
        self, loop: asyncio.AbstractEventLoop, argv: list[str]
    ) -> tuple[asyncio.SubprocessTransport, _ScriptProtocol]:
        return await loop.subprocess_exec(
            lambda: _ScriptProtocol(loop),
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.cwd,
            env=dict(self.env),
            start_new_session=True,
        )

    async def _forward(self, protocol: _ScriptProtocol) -> None:
        while True:
            item = await protocol.lines.get()
            protocol.line_taken()
            if item is None:
                return
            level, text = item
            self.tail.append(text)
            await self.log(level, self.stage, text)

    async def _wait_exit(self, protocol: _ScriptProtocol, forwarder: asyncio.Task[None]) -> None:
        """Wait for the script to exit; a failing log sink fails the run at once."""
        await asyncio.wait({protocol.exited, forwarder}, return_when=asyncio.FIRST_COMPLETED)
        if forwarder.done() and not forwarder.cancelled() and forwarder.exception() is not None:
            forwarder.result()

    async def _stop(self, protocol: _ScriptProtocol, pgid: int) -> None:
        """Interrupt the process group, give the script the grace period, then kill the group."""
        try:
            if not protocol.exited.done() and _signal_group(pgid, signal.SIGINT):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(protocol.exited), self.grace_seconds)
        finally:
            _signal_group(pgid, signal.SIGKILL)

    async def _drain(
        self, transport: asyncio.SubprocessTransport, protocol: _ScriptProtocol, forwarder: asyncio.Task[None]
    ) -> None:
        """Forward what is left of the output once the script is gone."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(protocol.closed), _DRAIN_SECONDS)
        if not protocol.closed.done():
            await self.log(
                "warn",
                self.stage,
                "the script's output is still open after it exited (held by a detached process?); "
                "no longer reading it",
            )
            transport.close()
        await forwarder

    def _with_tail(self, message: str) -> str:
        if not self.tail:
            return message + " (no output)"
        return f"{message}:\n" + "\n".join(self.tail)


def _describe(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            return str(code)
    return str(code)
