"""The provisioners this host can run, by kind."""

from __future__ import annotations

from prebuildd.provisioner.base import Provisioner
from prebuildd.provisioner.echo import EchoProvisioner
from prebuildd.provisioner.exec import ExecProvisioner


def available_provisioners() -> dict[str, Provisioner]:
    """Every provisioner kind this host can run, keyed by kind (what a daemon advertises)."""
    provisioners: list[Provisioner] = [EchoProvisioner(), ExecProvisioner()]
    # terraform: add TerraformProvisioner here when `terraform` is on PATH (a host without it must not
    # advertise the kind, so Terraform jobs wait for a daemon that can run them).
    return {provisioner.kind: provisioner for provisioner in provisioners}
