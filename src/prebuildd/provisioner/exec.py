"""The ``exec`` provisioner: runs the template's ``create``/``start``/``stop``/``delete``/``claim`` scripts.

A script runs as a real child process in its own session, through the shared runner of ``provisioner.process``
(so its whole process group can be signalled), with the template files as its working directory and an
environment built from the build: parameters as ``PREBUILDD_PARAM_<NAME>``, workspace facts as ``PREBUILDD_*``,
a state file it may rewrite and an outputs file it may fill with a JSON object. Its output is streamed line by
line to the job log as it comes.

Nothing outlives a build: processes the script leaves running in its process group are killed when it exits
(a script that must start a long-lived process detaches it into its own session, e.g. ``setsid``); a timeout
or a cancellation interrupts the group (SIGINT), waits a grace period for the script, then kills the group.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import signal
import tempfile
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prebuildd.domain import limits
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
from prebuildd.provisioner.process import ProcessExit, SpawnError, Warnings, run_process
from prebuildd.runtime.files import private_dir

DEFAULT_GRACE_SECONDS = 10.0
"""How long an interrupted script may take to exit before its process group is killed."""

TAIL_LINES = 10
"""Output lines quoted in the error of a failed script."""

INHERITED_ENV = ("PATH", "HOME", "LANG", "TMPDIR")
"""The only variables of the daemon's environment a script sees."""

_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class ExecProvisioner:
    """Runs one template script per build as a child process; see the module docstring."""

    kind: str = "exec"

    def __init__(self, *, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> None:
        self.grace_seconds = grace_seconds

    async def run_build(self, ctx: BuildContext, log: LogSink) -> BuildResult:
        config = _exec_config(ctx.manifest.exec)
        step = "claim" if ctx.is_claim else ctx.transition.value
        if step == "claim" and config.claim is None:
            # A claim build of a template with no claim script exists only because the user gave other values
            # for mutable parameters at claim time: `start` is what applies values to a started workspace.
            await log(
                "info", "claim", "no exec script for `claim`: running `start` with the values given at claim"
            )
            step = "start"
        first_build = ctx.build_number == 1
        script = config.script_for(step, first_build=first_build)
        if script is None:
            await log("info", step, f"no exec script for `{step}`: nothing to do")
            return BuildResult(state=ctx.state)
        key = _script_key(config, step, first_build)
        path = _script_path(ctx.files_dir, script, key)
        _check_parameter_sizes(ctx.parameters)

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


def _check_parameter_sizes(parameters: Mapping[str, str]) -> None:
    """The server refuses larger values when they are given; a job from elsewhere (an older server, a direct
    insert) still fails here with the parameter and the limit, not with the kernel's "Argument list too long"."""
    for name, value in parameters.items():
        if (reason := limits.PARAMETER_VALUE.check(value)) is not None:
            raise ProvisionerFailure(f"parameter `{name}`: value too large: {reason}", FailureClass.CONFIG)
    total = limits.parameter_values_total(dict(parameters))
    if (reason := limits.PARAMETER_VALUES_TOTAL.exceeded(total)) is not None:
        raise ProvisionerFailure(
            f"parameters: the values are too large together: {reason}", FailureClass.CONFIG
        )


def _prepare_files(state_file: Path, state: bytes | None, outputs_file: Path, data_dir: Path) -> None:
    state_file.write_bytes(state or b"")
    outputs_file.write_bytes(b"")
    private_dir(data_dir)


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


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _read_results(state_file: Path, outputs_file: Path, script: str) -> tuple[bytes | None, dict[str, Any]]:
    state = state_file.read_bytes() if state_file.exists() else b""
    text = outputs_file.read_text(encoding="utf-8", errors="replace") if outputs_file.exists() else ""
    outputs: dict[str, Any] = {}
    if text.strip():
        try:
            decoded = json.loads(text, parse_constant=_no_constant)
        except (
            json.JSONDecodeError,
            ValueError,
        ) as exc:  # ValueError: NaN/Infinity, which PostgreSQL cannot store
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


# --- one script run ---------------------------------------------------------------------------------


_WARNINGS = Warnings(
    leftover_processes="{script} left processes running in its process group; they were killed "
    "(detach long-lived processes into their own session, e.g. with setsid)",
    output_still_open="the script's output is still open after it exited (held by a detached process?); "
    "no longer reading it",
)


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
        deadline = None if self.timeout is None else loop.time() + self.timeout
        direct = os.access(self.path, os.X_OK)
        argv = [str(self.path)] if direct else ["/bin/sh", str(self.path)]
        try:
            try:
                ended = await self._run(argv, deadline)
            except SpawnError as failed:
                if not (direct and failed.error.errno == errno.ENOEXEC):
                    raise
                # An executable without a #! line: run it with the shell, as a shell would.
                ended = await self._run(["/bin/sh", str(self.path)], deadline)
        except SpawnError as failed:
            raise ProvisionerFailure(
                f"{self.script}: cannot run: {failed.error.strerror or failed.error}",
                FailureClass.BUILD,
            ) from None
        if ended.timed_out:
            raise ProvisionerFailure(
                self._with_tail(f"{self.script} timed out after {format_duration(self.timeout or 0)}")
            )
        if ended.returncode != 0:
            raise ProvisionerFailure(
                self._with_tail(f"{self.script} exited with status {_describe(ended.returncode)}")
            )

    async def _run(self, argv: list[str], deadline: float | None) -> ProcessExit:
        return await run_process(
            argv,
            cwd=self.cwd,
            env=self.env,
            on_line=self._line,
            log=self.log,
            stage=self.stage,
            deadline=deadline,
            grace_seconds=self.grace_seconds,
            warnings=Warnings(
                _WARNINGS.leftover_processes.format(script=self.script), _WARNINGS.output_still_open
            ),
        )

    async def _line(self, level: str, text: str) -> None:
        self.tail.append(text)
        await self.log(level, self.stage, text)

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
