"""The terraform provisioner with the real `terraform` binary, on configurations that need no provider download
(`terraform_data` + `local-exec`). They skip where Terraform is absent, and fail so under CI=true."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from prebuildd.domain.jobs import FailureClass, Transition
from prebuildd.domain.manifest import parse_manifest
from prebuildd.domain.parameters import ParameterSpec, ParameterType
from prebuildd.provisioner.base import BuildResult, ImportContext, ProvisionerFailure
from prebuildd.provisioner.terraform import TerraformFailure, TerraformProvisioner
from tests.support.logs import Logs
from tests.support.processes import process_gone
from tests.support.terraform import build_context, require_terraform, terraform_manifest, write_files
from tests.support.waiting import wait_for

EXAMPLE = Path(__file__).parents[2] / "examples" / "terraform-local"

WORKSPACE_TF = """
variable "project" {
  type        = string
  default     = "hello"
  description = "The project."
  validation {
    condition     = can(regex("^[a-z]+$", var.project))
    error_message = "lowercase letters"
  }
}
variable "cpus" {
  type = number
  validation {
    condition     = var.cpus >= 1 && var.cpus <= 8
    error_message = "1 to 8"
  }
}
variable "features" {
  type    = list(string)
  default = []
}
variable "prebuildd_transition" { type = string }
variable "prebuildd_data_dir" { type = string }
variable "prebuildd_workspace_owner" { type = string }

locals {
  home = "${var.prebuildd_data_dir}/home"
}

# Keyed on nothing that changes between builds: created once, kept across stop/start.
resource "terraform_data" "home" {
  input = local.home
  provisioner "local-exec" {
    command = "mkdir -p '${local.home}' && echo created >> '${local.home}/created'"
  }
  provisioner "local-exec" {
    when    = destroy
    command = "rm -rf '${self.input}'"
  }
}

# Exists while started.
resource "terraform_data" "running" {
  count = var.prebuildd_transition == "start" ? 1 : 0
  input = { home = local.home, owner = var.prebuildd_workspace_owner }
  depends_on = [terraform_data.home]
  provisioner "local-exec" {
    command = "echo '${var.prebuildd_workspace_owner} ${var.cpus}' > '${local.home}/running'"
  }
  provisioner "local-exec" {
    when    = destroy
    command = "rm -f '${self.input.home}/running'"
  }
}

output "home" {
  value = local.home
}
output "shape" {
  value = { cpus = var.cpus, features = var.features }
}
output "secret" {
  value     = "s3cret"
  sensitive = true
}
"""


@pytest.fixture
def terraform() -> str:
    return require_terraform()


@pytest.fixture
def provisioner(terraform: str, tmp_path: Path) -> TerraformProvisioner:
    return TerraformProvisioner(terraform, plugin_cache_dir=tmp_path / "plugin-cache", grace_seconds=5)


class Workspace:
    """Builds of one workspace, each in a fresh copy of the files, with the state carried between them."""

    def __init__(
        self, provisioner: TerraformProvisioner, tmp: Path, files: dict[str, str], **ctx: Any
    ) -> None:
        self.provisioner, self.tmp, self.files, self.ctx = provisioner, tmp, files, ctx
        self.data = tmp / "data" / "ws-1"
        self.state: bytes | None = None
        self.number = 0

    async def build(self, transition: Transition, logs: Logs | None = None, **ctx: Any) -> BuildResult:
        self.number += 1
        files = write_files(self.tmp / f"build-{self.number}", self.files)
        context = build_context(
            files,
            self.data,
            transition=transition,
            build_number=self.number,
            state=self.state,
            **{**self.ctx, **ctx},
        )
        result = await self.provisioner.run_build(context, logs or Logs())
        self.state = result.state
        return result


def resources(state: bytes | None) -> dict[str, str]:
    """Resource address → id, from a state file."""
    assert state is not None
    found = {}
    for r in json.loads(state)["resources"]:
        for i, instance in enumerate(r["instances"]):
            address = f"{r['type']}.{r['name']}" + (f"[{i}]" if "index_key" in instance else "")
            found[address] = instance["attributes"]["id"]
    return found


async def test_import_parses_the_variables(provisioner: TerraformProvisioner, tmp_path: Path) -> None:
    files = write_files(tmp_path / "files", {"main.tf": WORKSPACE_TF})
    logs = Logs()
    result = await provisioner.import_version(ImportContext("v-1", files, terraform_manifest()), logs)
    assert result.parameters == (
        ParameterSpec(
            name="project",
            default="hello",
            validation_regex="^[a-z]+$",
            validation_error="lowercase letters",
            description="The project.",
        ),
        ParameterSpec(
            name="cpus",
            type=ParameterType.NUMBER,
            required=True,
            validation_min=1,
            validation_max=8,
            validation_error="1 to 8",
        ),
        ParameterSpec(name="features", type=ParameterType.LIST_STRING, default="[]"),
    )
    assert result.warnings == ()
    assert any("Terraform has been successfully initialized" in line for line in logs.lines("init"))


async def test_import_names_file_and_line_of_a_syntax_error(
    provisioner: TerraformProvisioner, tmp_path: Path
) -> None:
    files = write_files(
        tmp_path / "files",
        {"main.tf": 'variable "a" {}\n', "broken.tf": 'resource "terraform_data" "x" {\n  input = \n}\n'},
    )
    with pytest.raises(ProvisionerFailure) as info:
        await provisioner.import_version(ImportContext("v-1", files, terraform_manifest()), Logs())
    assert info.value.failure_class is FailureClass.BUILD
    assert "broken.tf:2: Invalid expression" in info.value.message


async def test_import_reports_an_invalid_configuration(
    provisioner: TerraformProvisioner, tmp_path: Path
) -> None:
    files = write_files(
        tmp_path / "files", {"main.tf": 'resource "terraform_data" "x" {\n  input = 1\n  bogus = 2\n}\n'}
    )
    with pytest.raises(ProvisionerFailure) as info:
        await provisioner.import_version(ImportContext("v-1", files, terraform_manifest()), Logs())
    assert info.value.message.startswith(
        "the Terraform configuration is invalid:\nmain.tf:3: Unsupported argument"
    )


async def test_create_stop_start_delete_with_the_state_carried(
    provisioner: TerraformProvisioner, tmp_path: Path
) -> None:
    ws = Workspace(
        provisioner, tmp_path, {"main.tf": WORKSPACE_TF}, parameters={"cpus": "2", "features": '["x"]'}
    )
    home = ws.data / "home"

    logs = Logs()
    created = await ws.build(Transition.START, logs)
    assert (home / "running").read_text() == "alice 2\n"
    assert created.outputs == {"home": str(home), "shape": {"cpus": 2, "features": ["x"]}}
    first = resources(created.state)
    assert set(first) == {"terraform_data.home", "terraform_data.running[0]"}
    assert "terraform_data.running[0]: Creation complete" in logs.text()

    stopped = await ws.build(Transition.STOP)
    assert not (home / "running").exists()
    assert resources(stopped.state) == {"terraform_data.home": first["terraform_data.home"]}

    started = await ws.build(Transition.START, owner_name="bob")
    assert (home / "running").read_text() == "bob 2\n"
    assert resources(started.state)["terraform_data.home"] == first["terraform_data.home"]
    assert (home / "created").read_text() == "created\n", "the state was carried: home was never re-created"

    deleted = await ws.build(Transition.DELETE)
    assert not home.exists()
    assert resources(deleted.state) == {}
    assert deleted.outputs == {}


async def test_a_failing_local_exec_fails_the_build_with_terraforms_error(
    provisioner: TerraformProvisioner, tmp_path: Path
) -> None:
    files = {
        "main.tf": """
resource "terraform_data" "boom" {
  provisioner "local-exec" {
    command = "echo 'disk full on /dev/ws' >&2; exit 7"
  }
}
"""
    }
    with pytest.raises(TerraformFailure) as info:
        await Workspace(provisioner, tmp_path, files).build(Transition.START)
    error = info.value
    assert error.failure_class is FailureClass.BUILD
    assert error.message.startswith(
        "terraform apply failed (exited with status 1):\nmain.tf:3: local-exec provisioner error"
    )
    assert "exit status 7" in error.message and "disk full on /dev/ws" in error.message
    assert "(terraform_data.boom)" in error.message
    assert "terraform_data.boom" in resources(error.state), (
        "the tainted resource is in the state Terraform left"
    )


LONG_APPLY = """
variable "prebuildd_data_dir" { type = string }
resource "terraform_data" "slow" {
  provisioner "local-exec" {
    command = "sleep 300 & echo \\"$PPID $$ $!\\" > '${var.prebuildd_data_dir}/pids'; wait"
  }
}
"""


def read_pids(path: Path) -> list[int]:
    """terraform's pid, the local-exec shell's and its child's, once the local-exec wrote them all."""
    words = path.read_text().split() if path.exists() else []
    return [int(word) for word in words] if len(words) == 3 else []


async def wait_for_pids(path: Path) -> list[int]:
    await wait_for(lambda: bool(read_pids(path)), what="the local-exec to start")
    return read_pids(path)


async def wait_gone(pids: list[int]) -> None:
    await wait_for(lambda: all(process_gone(pid) for pid in pids), what=f"processes {pids} to end")


async def test_cancel_of_a_long_apply_stops_terraform_and_its_child(
    provisioner: TerraformProvisioner, tmp_path: Path
) -> None:
    ws = Workspace(provisioner, tmp_path, {"main.tf": LONG_APPLY})
    logs = Logs()
    task = asyncio.create_task(ws.build(Transition.START, logs))
    pids = await wait_for_pids(ws.data / "pids")
    terraform_pid = pids[0]
    assert not any(process_gone(pid) for pid in pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_gone(pids)
    assert terraform_pid == pids[0]
    assert any("Interrupt received" in line for line in logs.lines("apply")), (
        "terraform was interrupted first"
    )


async def test_the_timeout_stops_a_long_apply(terraform: str, tmp_path: Path) -> None:
    provisioner = TerraformProvisioner(terraform, plugin_cache_dir=tmp_path / "cache", grace_seconds=5)
    ws = Workspace(
        provisioner,
        tmp_path,
        {"main.tf": LONG_APPLY},
        manifest=terraform_manifest('[terraform]\ntimeout = "3s"\n'),
    )
    with pytest.raises(TerraformFailure) as info:
        await ws.build(Transition.START)
    assert info.value.message.startswith("terraform apply timed out after 3s")
    assert info.value.failure_class is FailureClass.BUILD
    await wait_gone(await wait_for_pids(ws.data / "pids"))


NEEDS_NULL_PROVIDER = """
terraform {
  required_providers {
    null = { source = "hashicorp/null" }
  }
}
resource "null_resource" "x" {}
"""


async def test_a_provider_that_cannot_be_installed_is_an_infrastructure_failure(
    terraform: str, tmp_path: Path
) -> None:
    mirror = tmp_path / "empty-mirror"
    mirror.mkdir()
    cli_config = tmp_path / "terraform.rc"
    # A filesystem mirror and nothing else: Terraform never goes to the network.
    cli_config.write_text(
        f'provider_installation {{\n  filesystem_mirror {{\n    path = "{mirror}"\n  }}\n}}\n'
    )
    provisioner = TerraformProvisioner(
        terraform, plugin_cache_dir=tmp_path / "cache", env={"TF_CLI_CONFIG_FILE": str(cli_config)}
    )
    with pytest.raises(ProvisionerFailure) as info:
        await Workspace(provisioner, tmp_path, {"main.tf": NEEDS_NULL_PROVIDER}).build(Transition.START)
    error = info.value
    assert error.failure_class is FailureClass.INFRASTRUCTURE
    assert "providers or modules could not be installed" in error.message
    assert "not of the template" in error.message
    assert "hashicorp/null" in error.message

    with pytest.raises(ProvisionerFailure) as imported:
        files = write_files(tmp_path / "import", {"main.tf": NEEDS_NULL_PROVIDER})
        await provisioner.import_version(ImportContext("v-1", files, terraform_manifest()), Logs())
    assert imported.value.failure_class is FailureClass.INFRASTRUCTURE


# --- the example template ------------------------------------------------------------------------------


def example_files() -> dict[str, str]:
    return {str(path.relative_to(EXAMPLE)): path.read_text() for path in EXAMPLE.rglob("*") if path.is_file()}


async def test_the_example_imports_and_builds_without_an_agent_server(
    provisioner: TerraformProvisioner, tmp_path: Path
) -> None:
    manifest = parse_manifest((EXAMPLE / "prebuildd.toml").read_text())
    files = write_files(tmp_path / "import", example_files())
    imported = await provisioner.import_version(ImportContext("v-1", files, manifest), Logs())
    by_name = {spec.name: spec for spec in imported.parameters}
    assert list(by_name) == ["project", "setup_seconds", "editor", "agent_command"]
    assert by_name["editor"].mutable is True and by_name["editor"].options == ("vi", "nano", "emacs")
    assert by_name["project"].mutable is False and by_name["project"].default == "hello"
    assert by_name["project"].validation_regex == "^[a-z][a-z0-9-]*$"
    assert (by_name["setup_seconds"].validation_min, by_name["setup_seconds"].validation_max) == (0, 600)
    assert imported.warnings == ()

    # `true` as the agent command: the supervisor runs, the agent exits at once and waits for a new token.
    ws = Workspace(
        provisioner,
        tmp_path,
        example_files(),
        manifest=manifest,
        parameters={"project": "demo", "setup_seconds": "0", "agent_command": "true"},
        extra_env={"PREBUILDD_AGENT_TOKEN": "token-1", "PREBUILDD_AGENT_TOKEN_MAIN": "token-1"},
    )
    created = await ws.build(Transition.START)
    home, agent = ws.data / "demo", ws.data / ".agent"
    assert created.outputs["directory"] == str(home)
    assert (home / "README.md").read_text() == "# demo\n"
    assert (agent / "token").read_text() == "token-1"
    supervisor = int((agent / "supervisor.pid").read_text())
    assert not process_gone(supervisor), "the agent supervisor outlives the build (setsid)"

    assert created.outputs["owner"] == "alice" and created.outputs["editor"] == "vi"

    # A claim build carries no token and a new owner: only the profile is rewritten, the agent keeps its token.
    before = resources(ws.state)
    claimed = await ws.build(
        Transition.START,
        is_claim=True,
        owner_name="bob",
        workspace_name="bobs",
        extra_env={},
        parameters={"project": "demo", "setup_seconds": "0", "agent_command": "true", "editor": "nano"},
    )
    assert resources(ws.state)["terraform_data.home"] == before["terraform_data.home"]
    assert resources(ws.state)["terraform_data.agent[0]"] == before["terraform_data.agent[0]"]
    assert resources(ws.state)["terraform_data.profile"] != before["terraform_data.profile"]
    assert (agent / "token").read_text() == "token-1"
    assert claimed.outputs["owner"] == "bob" and claimed.outputs["editor"] == "nano"
    assert (home / ".profile").read_text() == "owner=bob\nworkspace=bobs\neditor=nano\n"

    await ws.build(Transition.STOP)
    await wait_gone([supervisor])
    assert (home / "README.md").exists()

    await ws.build(Transition.DELETE)
    assert not home.exists() and not agent.exists()
    shutil.rmtree(tmp_path / "data", ignore_errors=True)
