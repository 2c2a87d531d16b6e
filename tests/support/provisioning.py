"""The build context a provisioner is handed, as the provisioner tests build it: job ``job-1`` starting
workspace ``dev`` of alice from template ``demo``, build 1, no state; and an echo provisioner that records the jobs
it runs, for the queue tests."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from prebuildd.domain.jobs import Transition
from prebuildd.domain.manifest import TemplateManifest
from prebuildd.provisioner.base import BuildContext, BuildResult, ImportContext, ImportResult, LogSink


def build_context(
    manifest: TemplateManifest, files: Path, data: Path | None = None, **overrides: Any
) -> BuildContext:
    fields: dict[str, Any] = {
        "job_id": "job-1",
        "workspace_id": "ws-1",
        "workspace_name": "dev",
        "owner_id": "user-1",
        "owner_name": "alice",
        "template_name": "demo",
        "version_id": "v-1",
        "transition": Transition.START,
        "build_number": 1,
        "parameters": {},
        "state": None,
        "files_dir": files,
        "manifest": manifest,
        "data_dir": data,
    }
    fields.update(overrides)
    return BuildContext(**fields)


ECHO = 'provisioner = "echo"\n'


class Recording:
    """A provisioner that records every job it runs (to prove each runs exactly once)."""

    kind = "echo"

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()

    async def run_build(self, ctx: BuildContext, log: LogSink) -> BuildResult:
        self.runs[ctx.job_id] += 1
        await asyncio.sleep(0)
        return BuildResult()

    async def import_version(self, ctx: ImportContext, log: LogSink) -> ImportResult:
        return ImportResult(parameters=ctx.manifest.parameters)
