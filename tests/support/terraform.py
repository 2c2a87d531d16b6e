"""Helpers for the Terraform tests: finding the binary (skip locally, fail under CI), files, contexts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from prebuildd.domain.jobs import Transition
from prebuildd.domain.manifest import TemplateManifest, parse_manifest
from prebuildd.provisioner.base import BuildContext
from prebuildd.provisioner.registry import terraform_binary


def require_terraform() -> str:
    """The Terraform binary; skips the test without one, and fails it under CI=true (where it must run)."""
    binary = terraform_binary()
    if binary is None:
        configured = os.environ.get("PREBUILDD_TERRAFORM")
        where = (
            f"PREBUILDD_TERRAFORM={configured} is not an executable file"
            if configured
            else "not on PATH, and PREBUILDD_TERRAFORM is not set"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"terraform not found ({where}): CI=true requires the tests that run real Terraform")
        pytest.skip(f"terraform not found ({where}): the tests that run real Terraform are skipped")
    return binary


def write_files(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def terraform_manifest(extra: str = "") -> TemplateManifest:
    return parse_manifest('provisioner = "terraform"\n' + extra)


def build_context(
    files: Path, data: Path, manifest: TemplateManifest | None = None, **overrides: Any
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
        "manifest": manifest or terraform_manifest(),
        "data_dir": data,
    }
    fields.update(overrides)
    return BuildContext(**fields)
