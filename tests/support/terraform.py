"""Helpers for the Terraform tests: finding the binary (skip locally, fail under CI), files, contexts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from prebuildd.domain.manifest import TemplateManifest, parse_manifest
from prebuildd.provisioner.base import BuildContext
from prebuildd.provisioner.registry import terraform_binary
from tests.support import provisioning


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
    """A build context for a Terraform template (``provisioner = "terraform"`` unless ``manifest`` is given)."""
    return provisioning.build_context(manifest or terraform_manifest(), files, data, **overrides)
