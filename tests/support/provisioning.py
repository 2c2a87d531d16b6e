"""The build context a provisioner is handed, as the provisioner tests build it: job ``job-1`` starting
workspace ``dev`` of alice from template ``demo``, build 1, no state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prebuildd.domain.jobs import Transition
from prebuildd.domain.manifest import TemplateManifest
from prebuildd.provisioner.base import BuildContext


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
