"""What a provisioner is: it runs one build (or one import) of a template version and reports the result."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prebuildd.domain.jobs import FailureClass, Transition
from prebuildd.domain.manifest import TemplateManifest
from prebuildd.domain.parameters import ParameterSpec

LogSink = Callable[[str, str, str], Awaitable[None]]
"""``await log(level, stage, line)``: level is debug|info|warn|error, stage names the step (e.g. 'create')."""


@dataclass(frozen=True)
class BuildContext:
    """Everything a provisioner needs to run one workspace build."""

    job_id: str
    workspace_id: str
    workspace_name: str
    owner_id: str
    owner_name: str
    template_name: str
    version_id: str
    transition: Transition
    build_number: int
    parameters: Mapping[str, str]
    state: bytes | None
    """State the previous build of this workspace left (None on the first build)."""
    files_dir: Path
    """The template version's files, extracted into a fresh directory for this build."""
    manifest: TemplateManifest
    preset_name: str | None = None
    is_prebuild: bool = False
    is_claim: bool = False
    access_url: str = ""
    data_dir: Path | None = None
    """Where a provisioner may keep things across builds of a workspace (e.g. a local workspace directory)."""
    extra_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildResult:
    state: bytes | None = None
    outputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportContext:
    version_id: str
    files_dir: Path
    manifest: TemplateManifest


@dataclass(frozen=True)
class ImportResult:
    """Declared parameters after the provisioner had its say (e.g. Terraform variables merged in)."""

    parameters: tuple[ParameterSpec, ...]
    warnings: tuple[str, ...] = ()


class ProvisionerFailure(Exception):
    """A build or import failed; ``message`` is what the job's error will say."""

    def __init__(
        self, message: str, failure_class: FailureClass = FailureClass.BUILD, state: bytes | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.failure_class = failure_class
        self.state = state
        """What the failed run left (e.g. resources created before the error), so the next build, a delete
        above all, still knows about them. None: the previous state stands."""


class Provisioner(Protocol):
    kind: str

    async def run_build(self, ctx: BuildContext, log: LogSink) -> BuildResult:
        """Run the build. Raise ProvisionerFailure on failure. Cancellation (asyncio) must stop any child
        process (interrupt, then kill after a grace period) before re-raising CancelledError."""
        ...

    async def import_version(self, ctx: ImportContext, log: LogSink) -> ImportResult:
        """Check the version's files beyond the static manifest checks; raise ProvisionerFailure naming the
        file and the problem."""
        ...
