"""The ``echo`` provisioner: scripted outcomes, logs and delays from the manifest, for tests and demos."""

from __future__ import annotations

import asyncio

from prebuildd.domain.manifest import EchoConfig, EchoStep
from prebuildd.provisioner.base import (
    BuildContext,
    BuildResult,
    ImportContext,
    ImportResult,
    LogSink,
    ProvisionerFailure,
)

_DEFAULT_ERROR = "echo: scripted failure"


def echo_state(build_number: int) -> bytes:
    """The state an echo build leaves: it names the build that wrote it."""
    return f"echo-state:{build_number}".encode()


def step_name(ctx: BuildContext) -> str:
    """The scripted step a build plays: ``claim`` for a claim build, else its transition."""
    return "claim" if ctx.is_claim else ctx.transition.value


class EchoProvisioner:
    """Plays the step of ``[echo.<step>]`` named after the build: logs its lines, waits its delay, blocks
    until canceled when ``block`` is set, then fails with its error or succeeds with its outputs.

    A manifest without an echo section, or without the step, succeeds at once.
    """

    kind: str = "echo"
    needs_files: bool = False
    """Plays steps from the manifest only: the daemon need not unpack the template for it."""

    async def run_build(self, ctx: BuildContext, log: LogSink) -> BuildResult:
        step = _step(ctx.manifest.echo, step_name(ctx))
        await _play(step, step_name(ctx), log)
        return BuildResult(state=echo_state(ctx.build_number), outputs=dict(step.outputs))

    async def import_version(self, ctx: ImportContext, log: LogSink) -> ImportResult:
        await _play(_step(ctx.manifest.echo, "import"), "import", log)
        return ImportResult(parameters=ctx.manifest.parameters)


def _step(config: EchoConfig | None, name: str) -> EchoStep:
    return config.step(name) if config is not None else EchoStep()


async def _play(step: EchoStep, stage: str, log: LogSink) -> None:
    for line in step.logs:
        await log("info", stage, line)
    if step.delay_seconds > 0:
        await asyncio.sleep(step.delay_seconds)
    if step.block:
        # Wait until canceled: the job's cancellation is the only way out.
        await asyncio.get_running_loop().create_future()
    if step.result == "failure":
        raise ProvisionerFailure(step.error or _DEFAULT_ERROR, step.failure_class)
