"""The provisioners this host can run, by kind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import structlog

from prebuildd.domain.jobs import Capabilities
from prebuildd.provisioner.base import Provisioner
from prebuildd.provisioner.echo import EchoProvisioner
from prebuildd.provisioner.exec import ExecProvisioner
from prebuildd.provisioner.terraform import TerraformProvisioner
from prebuildd.runtime.config import ServerConfig

TERRAFORM_ENV = "PREBUILDD_TERRAFORM"
"""Path (or command name) of the Terraform binary; without it, `terraform` on PATH."""

log = structlog.get_logger(__name__)


def terraform_binary() -> str | None:
    """The Terraform binary this host would use, or None when there is none."""
    configured = os.environ.get(TERRAFORM_ENV, "").strip()
    if not configured:
        return shutil.which("terraform")
    found = shutil.which(configured) if os.sep not in configured else configured
    if found is None or not (Path(found).is_file() and os.access(found, os.X_OK)):
        log.warning("provisioner.terraform_not_found", configured=configured, variable=TERRAFORM_ENV)
        return None
    return found


def available_provisioners() -> dict[str, Provisioner]:
    """Every provisioner kind this host can run, keyed by kind (what a daemon advertises).

    `terraform` only where the binary is found: a host without it must not advertise the kind, so Terraform
    jobs wait for a daemon that can run them.
    """
    provisioners: list[Provisioner] = [EchoProvisioner(), ExecProvisioner()]
    binary = terraform_binary()
    if binary is not None:
        provisioners.append(TerraformProvisioner(binary))
    return {provisioner.kind: provisioner for provisioner in provisioners}


def offered_capabilities(config: ServerConfig) -> Capabilities:
    """The kinds and tags of the embedded daemons (none when the server runs no embedded daemon)."""
    if config.provisioner_daemons <= 0:
        return Capabilities(frozenset(), {})
    return Capabilities(frozenset(available_provisioners()), dict(config.provisioner_tags))
