"""The ``terraform`` provisioner: real ``terraform init``/``apply``/``destroy`` of a template version's files.

A build runs in the job's fresh copy of the version's files. It writes the state the workspace's previous
build left as ``terraform.tfstate`` and the values of the declared variables (parameters and workspace facts,
see :mod:`.terraform_vars`) as ``prebuildd.auto.tfvars.json``, runs ``init`` with a shared plugin cache, then
``apply`` (start, claim, and stop when the configuration declares ``prebuildd_transition``, Coder's
``start_count`` pattern) or ``destroy`` (delete), and returns the new ``terraform.tfstate`` and the values of
``terraform output -json``. An import runs ``init`` and ``validate`` and turns the ``variable`` blocks into
declared parameters.

Failure classes: an error while applying is the template's (``build``); a provider or module that cannot be
installed, a missing binary or a crashed Terraform is the host's (``infrastructure``), and the message says so.
The state Terraform wrote before a failed apply travels with :class:`TerraformFailure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prebuildd.domain.durations import format_duration
from prebuildd.domain.jobs import FailureClass, Transition
from prebuildd.domain.manifest import (
    MANIFEST_FILE,
    TERRAFORM_KEYS,
    ManifestError,
    TemplateManifest,
    TerraformConfig,
    terraform_config,
)
from prebuildd.provisioner.base import (
    BuildContext,
    BuildResult,
    ImportContext,
    ImportResult,
    LogSink,
    ProvisionerFailure,
)
from prebuildd.provisioner.terraform_hcl import HclError, TerraformVariable, read_variables
from prebuildd.provisioner.terraform_run import (
    CommandResult,
    Diagnostic,
    TerraformCommand,
    TerraformNotRunnable,
)
from prebuildd.provisioner.terraform_vars import (
    TFVARS_FILE,
    TRANSITION_VARIABLE,
    ParameterConflict,
    build_tfvars,
    fact_values,
    manifest_parameter_keys,
    merge_parameters,
)
from prebuildd.runtime.files import private_dir

DEFAULT_TIMEOUT_SECONDS = 3600.0
"""A job's limit when the manifest sets no ``[terraform] timeout``."""
DEFAULT_GRACE_SECONDS = 30.0
"""How long an interrupted Terraform may take to stop cleanly before its process group is killed."""
STATE_FILE = "terraform.tfstate"
_MAX_ERRORS = 10

_DROPPED_ENV_PREFIXES = ("PREBUILDD_", "TF_CLI_ARGS")
_DROPPED_ENV = ("TF_DATA_DIR", "TF_WORKSPACE")
"""The daemon's own settings, and Terraform settings that would move or change what prebuildd reads."""


class TerraformFailure(ProvisionerFailure):
    """A failed Terraform build, with the state Terraform left (resources created before the error)."""

    def __init__(self, message: str, failure_class: FailureClass, state: bytes | None = None) -> None:
        super().__init__(message, failure_class, state)


def default_plugin_cache_dir() -> Path:
    """The operator's ``TF_PLUGIN_CACHE_DIR``, else one directory per user under the system's temp directory."""
    configured = os.environ.get("TF_PLUGIN_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"prebuildd-terraform-plugin-cache-{os.getuid()}"


@contextlib.asynccontextmanager
async def _cache_lock(cache: Path, deadline: float) -> AsyncIterator[None]:
    """Terraform's plugin cache is not safe for concurrent installs: one ``init`` at a time per cache (and per
    host: a file lock). Raises TimeoutError when the job's deadline passes first."""
    fd = os.open(cache / ".prebuildd-init.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        loop = asyncio.get_running_loop()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if loop.time() >= deadline:
                    raise TimeoutError from None
                await asyncio.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _describe_errors(result: CommandResult) -> str:
    errors = result.errors
    if errors:
        shown = [d.describe() for d in errors[:_MAX_ERRORS]]
        if len(errors) > _MAX_ERRORS:
            shown.append(f"(and {len(errors) - _MAX_ERRORS} more errors)")
        return "\n".join(shown)
    if result.tail:
        return "\n".join(result.tail)
    return "(no output)"


@dataclass
class _Job:
    """One build or import: the commands share a working directory, an environment and a deadline."""

    provisioner: TerraformProvisioner
    command: TerraformCommand
    deadline: float
    timeout: float

    async def run(self, args: list[str], stage: str, **kw: Any) -> CommandResult:
        try:
            return await self.command.run(args, stage, deadline=self.deadline, **kw)
        except TerraformNotRunnable as exc:
            raise ProvisionerFailure(
                f"cannot run terraform ({exc}): install Terraform on this provisioner host or point "
                "PREBUILDD_TERRAFORM at it",
                FailureClass.INFRASTRUCTURE,
            ) from None

    def timed_out(self, step: str) -> str:
        limit = format_duration(self.timeout)
        return f"terraform {step} timed out after {limit} (the template's [terraform] timeout)"

    async def init(self, *, backend: bool) -> None:
        cache = self.provisioner.plugin_cache_dir
        cache.mkdir(parents=True, exist_ok=True)
        args = ["init", "-input=false", "-json"] + ([] if backend else ["-backend=false"])
        try:
            async with _cache_lock(cache, self.deadline):
                result = await self.run(args, "init")
        except TimeoutError:
            raise ProvisionerFailure(
                f"terraform init did not start within the job's {format_duration(self.timeout)}: another "
                f"init held the plugin cache {cache} all along",
                FailureClass.INFRASTRUCTURE,
            ) from None
        if result.returncode == 0 and not result.timed_out:
            return
        errors = result.errors
        if not result.timed_out and any(d.located for d in errors):
            raise ProvisionerFailure(
                "terraform init failed: the configuration is invalid:\n"
                + "\n".join(d.describe() for d in errors if d.located),
                FailureClass.BUILD,
            )
        why = "timed out" if result.timed_out else "failed"
        raise ProvisionerFailure(
            f"terraform init {why}: providers or modules could not be installed. This is a problem of the "
            "provisioner host (network access, registry, provider mirror or plugin cache), not of the "
            f"template:\n{_describe_errors(result)}",
            FailureClass.INFRASTRUCTURE,
        )


class TerraformProvisioner:
    """Runs Terraform for builds and imports; see the module docstring."""

    kind: str = "terraform"

    def __init__(
        self,
        binary: str = "terraform",
        *,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        default_timeout: float = DEFAULT_TIMEOUT_SECONDS,
        plugin_cache_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.grace_seconds = grace_seconds
        self.default_timeout = default_timeout
        self.plugin_cache_dir = plugin_cache_dir or default_plugin_cache_dir()
        self.env = dict(env or {})
        """Extra environment for Terraform (over the daemon's own)."""

    # --- builds ------------------------------------------------------------------------------------

    async def run_build(self, ctx: BuildContext, log: LogSink) -> BuildResult:
        config = _config(ctx.manifest)
        variables = _variables(ctx.files_dir)
        declared = {var.name for var in variables}
        if ctx.transition is Transition.STOP and TRANSITION_VARIABLE not in declared:
            await log(
                "info",
                "stop",
                f'the configuration declares no variable "{TRANSITION_VARIABLE}": a stop changes nothing '
                f"(declare it and use it in `count` to stop resources)",
            )
            return BuildResult(state=ctx.state)

        workdir = ctx.files_dir
        await _write_state(workdir, ctx.state, log)
        data_dir = ctx.data_dir if ctx.data_dir is not None else workdir.parent / "data"
        private_dir(data_dir)
        values, unused = build_tfvars(variables, ctx.parameters, fact_values(ctx, data_dir), config.vars)
        (workdir / TFVARS_FILE).write_text(json.dumps(values, indent=2) + "\n")
        await log("debug", "init", f"variables passed: {', '.join(sorted(values)) or '(none)'}")
        if unused:
            await log("debug", "init", f"parameters no variable takes: {', '.join(unused)}")

        job = self._job(workdir, log, config)
        await job.init(backend=True)
        if ctx.transition is Transition.DELETE:
            step, args = "destroy", ["destroy", "-auto-approve", "-input=false", "-json"]
        else:
            step, args = "apply", ["apply", "-auto-approve", "-input=false", "-json"]
        result = await job.run(args, step)
        state = _read_state(workdir)
        _raise_for(result, step, job, state)
        outputs = {} if ctx.transition is Transition.DELETE else await _outputs(job, log)
        return BuildResult(state=state, outputs=outputs)

    # --- imports -----------------------------------------------------------------------------------

    async def import_version(self, ctx: ImportContext, log: LogSink) -> ImportResult:
        config = _config(ctx.manifest)
        warnings = [
            f"[terraform].{key}: unknown key, ignored (prebuildd reads: {', '.join(TERRAFORM_KEYS)})"
            for key in config.unknown_keys
        ]
        job = self._job(ctx.files_dir, log, config)
        await job.init(backend=False)
        result = await job.run(["validate", "-json"], "validate", capture=True)
        if result.timed_out:
            raise ProvisionerFailure(job.timed_out("validate"), FailureClass.BUILD)
        report = _validate_report(result)
        for diagnostic in report:
            level = "warn" if diagnostic.severity == "warning" else "error"
            await log(level, "validate", diagnostic.describe())
        errors = [d for d in report if d.severity == "error"]
        if errors or result.returncode != 0:
            raise ProvisionerFailure(
                "the Terraform configuration is invalid:\n"
                + ("\n".join(d.describe() for d in errors[:_MAX_ERRORS]) or _describe_errors(result)),
                FailureClass.BUILD,
            )
        variables = _variables(ctx.files_dir)
        manifest_file = ctx.files_dir / MANIFEST_FILE
        keys = manifest_parameter_keys(manifest_file.read_text() if manifest_file.exists() else None)
        try:
            specs, notes = merge_parameters(ctx.manifest.parameters, keys, variables, config)
        except ParameterConflict as exc:
            raise ProvisionerFailure(str(exc), FailureClass.BUILD) from None
        for spec in specs:
            await log("debug", "import", f"parameter {spec.name}: {spec.type}")
        return ImportResult(parameters=specs, warnings=tuple(warnings + notes))

    # --- pieces ------------------------------------------------------------------------------------

    def _job(self, workdir: Path, log: LogSink, config: TerraformConfig) -> _Job:
        timeout = config.timeout_seconds or self.default_timeout
        command = TerraformCommand(self.binary, workdir, self._environment(), log, self.grace_seconds)
        return _Job(self, command, asyncio.get_running_loop().time() + timeout, timeout)

    def _environment(self) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(_DROPPED_ENV_PREFIXES) and name not in _DROPPED_ENV
        }
        env.update(self.env)
        env.update(
            {
                "TF_IN_AUTOMATION": "1",
                "TF_INPUT": "0",
                "CHECKPOINT_DISABLE": "1",
                "TF_PLUGIN_CACHE_DIR": str(self.plugin_cache_dir),
                # Without a lock file in the template, Terraform only trusts a cached provider when told to.
                "TF_PLUGIN_CACHE_MAY_BREAK_DEPENDENCY_LOCK_FILE": "true",
            }
        )
        return env


def _config(manifest: TemplateManifest) -> TerraformConfig:
    try:
        return terraform_config(manifest)
    except ManifestError as exc:
        raise ProvisionerFailure(str(exc), FailureClass.CONFIG) from None


def _variables(files_dir: Path) -> list[TerraformVariable]:
    try:
        return read_variables(files_dir)
    except HclError as exc:
        raise ProvisionerFailure(f"cannot read the variable blocks: {exc}", FailureClass.BUILD) from None


async def _write_state(workdir: Path, state: bytes | None, log: LogSink) -> None:
    path = workdir / STATE_FILE
    if state:
        path.write_bytes(state)
        return
    for stale in (path, workdir / f"{STATE_FILE}.backup"):
        if stale.exists():
            await log(
                "warn", "init", f"the template ships {stale.name}; ignored (state belongs to workspaces)"
            )
            stale.unlink()


def _read_state(workdir: Path) -> bytes | None:
    path = workdir / STATE_FILE
    return path.read_bytes() if path.exists() else None


def _raise_for(result: CommandResult, step: str, job: _Job, state: bytes | None) -> None:
    if result.timed_out:
        raise TerraformFailure(
            job.timed_out(step) + ":\n" + _describe_errors(result), FailureClass.BUILD, state
        )
    if result.returncode == 0:
        return
    if result.crashed:
        raise TerraformFailure(
            f"terraform crashed during {step} (a Terraform bug, not the template's):\n"
            + "\n".join(result.tail),
            FailureClass.INFRASTRUCTURE,
            state,
        )
    if result.killed_by and not result.errors:
        raise TerraformFailure(
            f"terraform {step} was killed by {result.killed_by} (out of memory, or stopped by the host?)",
            FailureClass.INFRASTRUCTURE,
            state,
        )
    status = f"exited with status {result.returncode}"
    raise TerraformFailure(
        f"terraform {step} failed ({status}):\n{_describe_errors(result)}", FailureClass.BUILD, state
    )


async def _outputs(job: _Job, log: LogSink) -> dict[str, Any]:
    """``terraform output -json`` values; sensitive outputs are left out (outputs are shown to users)."""
    result = await job.run(["output", "-json"], "outputs", capture=True)
    text = "\n".join(result.stdout)
    try:
        decoded = json.loads(text) if text.strip() else {}
    except ValueError:
        decoded = None
    if result.returncode != 0 or not isinstance(decoded, dict):
        await log("warn", "outputs", "could not read the outputs (terraform output -json); none are stored")
        return {}
    outputs: dict[str, Any] = {}
    for name, output in decoded.items():
        if not isinstance(output, dict):
            continue
        if output.get("sensitive"):
            await log("debug", "outputs", f"output {name} is sensitive: not stored")
            continue
        outputs[name] = output.get("value")
    return outputs


def _validate_report(result: CommandResult) -> list[Diagnostic]:
    text = "\n".join(result.stdout)
    try:
        report = json.loads(text)
    except ValueError:
        return []
    if not isinstance(report, dict):
        return []
    return [Diagnostic.from_json(d) for d in report.get("diagnostics") or [] if isinstance(d, dict)]
