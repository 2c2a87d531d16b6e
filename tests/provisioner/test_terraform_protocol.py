"""The terraform provisioner against a fake `terraform` (tests/provisioner/fake_terraform.py), for what real
Terraform cannot be made to do here: garbled output, crashes, kills, outputs of every type, exact arguments."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from prebuildd.domain.jobs import FailureClass, Transition
from prebuildd.provisioner.base import ImportContext, ProvisionerFailure
from prebuildd.provisioner.registry import available_provisioners
from prebuildd.provisioner.terraform import TerraformFailure, TerraformProvisioner
from tests.support.logs import Logs
from tests.support.processes import process_gone
from tests.support.terraform import build_context, terraform_manifest, write_files
from tests.support.waiting import wait_for

FAKE = Path(__file__).with_name("fake_terraform.py")

MAIN_TF = """
variable "size" { type = number }
variable "tags" { type = list(string) }
variable "prebuildd_workspace_name" { type = string }
variable "prebuildd_is_prebuild" { type = bool }
"""


class Fake:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.binary = root / "bin" / "terraform"
        self.binary.parent.mkdir(parents=True)
        self.binary.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
        self.binary.chmod(0o755)
        self.scenario_file = root / "scenario.json"
        self.log_file = root / "calls.jsonl"
        self.scenario({})

    def scenario(self, steps: dict[str, Any]) -> None:
        self.scenario_file.write_text(json.dumps(steps))

    def calls(self) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines()]

    def provisioner(self, **kw: Any) -> TerraformProvisioner:
        env = {"FAKE_TERRAFORM_SCENARIO": str(self.scenario_file), "FAKE_TERRAFORM_LOG": str(self.log_file)}
        kw.setdefault("plugin_cache_dir", self.root / "cache")
        return TerraformProvisioner(str(self.binary), env=env, **kw)


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    return Fake(tmp_path / "fake")


@pytest.fixture
def files(tmp_path: Path) -> Path:
    return write_files(tmp_path / "files", {"main.tf": MAIN_TF})


def message(text: str, level: str = "info", **extra: Any) -> dict[str, Any]:
    return {"@level": level, "@message": text, "@module": "terraform.ui", **extra}


def diagnostic(summary: str, detail: str = "", *, severity: str = "error", **where: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"severity": severity, "summary": summary, "detail": detail}
    if "file" in where:
        body["range"] = {"filename": where["file"], "start": {"line": where["line"], "column": 1}}
    if "address" in where:
        body["address"] = where["address"]
    label = "Error" if severity == "error" else "Warning"
    return message(
        f"{label}: {summary}", "error" if severity == "error" else "warn", type="diagnostic", diagnostic=body
    )


HOOK = {"resource": {"addr": "terraform_data.x"}, "action": "create"}


async def run(fake: Fake, files: Path, tmp_path: Path, **ctx: Any) -> tuple[Any, Logs]:
    logs = Logs()
    result = await fake.provisioner().run_build(build_context(files, tmp_path / "data", **ctx), logs)
    return result, logs


async def failure(fake: Fake, files: Path, tmp_path: Path, **ctx: Any) -> tuple[ProvisionerFailure, Logs]:
    logs = Logs()
    with pytest.raises(ProvisionerFailure) as info:
        await fake.provisioner().run_build(build_context(files, tmp_path / "data", **ctx), logs)
    return info.value, logs


# --- a build, step by step -----------------------------------------------------------------------------


async def test_a_build_runs_init_apply_output_with_state_variables_and_environment(
    fake: Fake, files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREBUILDD_POSTGRES_URL", "postgresql://secret")
    monkeypatch.setenv("TF_CLI_ARGS", "-no-color")
    monkeypatch.setenv("CLOUD_CREDENTIALS", "kept")
    fake.scenario(
        {
            "apply": {
                "stdout": [
                    message("Terraform 1.11.4", type="version"),
                    message("terraform_data.x: Creating...", type="apply_start", hook=HOOK),
                    message("Creation complete after 0s", type="apply_complete", hook=HOOK),
                    diagnostic("Deprecated attribute", "use y", severity="warning", file="main.tf", line=4),
                    message("Apply complete!\nResources: 1 added.", type="change_summary"),
                ],
                "state": "state-after",
            },
            "output": {
                "stdout": [
                    json.dumps(
                        {
                            "url": {"sensitive": False, "type": "string", "value": "http://ws"},
                            "ports": {"sensitive": False, "type": ["list", "number"], "value": [1, 2]},
                            "meta": {"sensitive": False, "type": ["object", {}], "value": {"a": {"b": None}}},
                            "password": {"sensitive": True, "type": "string", "value": "hunter2"},
                        },
                        indent=2,
                    )
                ]
            },
        }
    )
    result, logs = await run(
        fake,
        files,
        tmp_path,
        parameters={"size": "3", "tags": '["a","b"]', "unused": "x"},
        state=b"state-before",
        is_prebuild=True,
    )

    calls = fake.calls()
    assert [c["argv"] for c in calls] == [
        ["init", "-input=false", "-json"],
        ["apply", "-auto-approve", "-input=false", "-json"],
        ["output", "-json"],
    ]
    apply = calls[1]
    assert apply["cwd"] == str(files)
    assert apply["state"] == "state-before"
    assert apply["tfvars"] == {
        "size": 3,
        "tags": ["a", "b"],
        "prebuildd_workspace_name": "dev",
        "prebuildd_is_prebuild": True,
    }
    env = apply["env"]
    assert env["TF_IN_AUTOMATION"] == "1" and env["TF_INPUT"] == "0"
    assert env["TF_PLUGIN_CACHE_DIR"] == str(fake.root / "cache")
    assert env["CLOUD_CREDENTIALS"] == "kept"
    assert "PREBUILDD_POSTGRES_URL" not in env and "TF_CLI_ARGS" not in env

    assert result.state == b"state-after"
    assert result.outputs == {"url": "http://ws", "ports": [1, 2], "meta": {"a": {"b": None}}}
    applied = [r for r in logs.records if r[1] == "apply"]
    assert applied == [
        ("info", "apply", "Terraform 1.11.4"),
        ("info", "apply", "terraform_data.x: Creating..."),
        ("info", "apply", "terraform_data.x: Creation complete after 0s"),
        ("warn", "apply", "Warning: main.tf:4: Deprecated attribute: use y"),
        ("info", "apply", "Apply complete!"),
        ("info", "apply", "Resources: 1 added."),
    ]
    assert "hunter2" not in logs.text()
    assert ("debug", "init", "parameters no variable takes: unused") in logs.records


async def test_garbled_lines_are_logged_as_they_are(fake: Fake, files: Path, tmp_path: Path) -> None:
    fake.scenario(
        {
            "apply": {
                "stdout": ["not json at all", '{"@level": "info", "@mess', "[1, 2]", message("fine")],
                "state": "s",
            }
        }
    )
    result, logs = await run(fake, files, tmp_path)
    assert result.state == b"s"
    assert logs.lines("apply") == ["not json at all", '{"@level": "info", "@mess', "[1, 2]", "fine"]


async def test_an_error_while_applying_is_a_build_failure_with_the_diagnostics(
    fake: Fake, files: Path, tmp_path: Path
) -> None:
    fake.scenario(
        {
            "apply": {
                "stdout": [
                    diagnostic(
                        "local-exec provisioner error",
                        "exit status 3",
                        file="main.tf",
                        line=3,
                        address="terraform_data.x",
                    ),
                    diagnostic("execution halted"),
                    diagnostic("execution halted"),
                ],
                "state": "tainted",
                "exit": 1,
            }
        }
    )
    error, _ = await failure(fake, files, tmp_path)
    assert error.failure_class is FailureClass.BUILD
    assert error.message == (
        "terraform apply failed (exited with status 1):\n"
        "main.tf:3: local-exec provisioner error: exit status 3 (terraform_data.x)\n"
        "execution halted"
    )
    assert isinstance(error, TerraformFailure) and error.state == b"tainted"


async def test_a_failure_without_diagnostics_quotes_the_last_lines(
    fake: Fake, files: Path, tmp_path: Path
) -> None:
    fake.scenario({"apply": {"stdout": [message(f"line {i}") for i in range(15)], "exit": 1}})
    error, _ = await failure(fake, files, tmp_path)
    assert error.failure_class is FailureClass.BUILD
    assert error.message.endswith("\n".join(f"line {i}" for i in range(5, 15)))


async def test_a_crash_mid_apply_is_an_infrastructure_failure(
    fake: Fake, files: Path, tmp_path: Path
) -> None:
    fake.scenario(
        {
            "apply": {
                "stdout": [message("terraform_data.x: Creating...")],
                "stderr": ["panic: runtime error: invalid memory address", "goroutine 1 [running]:"],
                "state": "partial",
                "exit": 11,
            }
        }
    )
    error, logs = await failure(fake, files, tmp_path)
    assert error.failure_class is FailureClass.INFRASTRUCTURE
    assert error.message.startswith("terraform crashed during apply")
    assert "panic: runtime error" in error.message
    assert isinstance(error, TerraformFailure) and error.state == b"partial"
    assert ("warn", "apply", "goroutine 1 [running]:") in logs.records


async def test_terraform_killed_is_an_infrastructure_failure(fake: Fake, files: Path, tmp_path: Path) -> None:
    fake.scenario({"apply": {"signal": "KILL"}})
    error, _ = await failure(fake, files, tmp_path)
    assert error.failure_class is FailureClass.INFRASTRUCTURE
    assert "killed by SIGKILL" in error.message


@pytest.mark.parametrize(
    ("diagnostics", "failure_class", "text"),
    [
        (
            [diagnostic("Failed to install provider", "registry.terraform.io unreachable")],
            FailureClass.INFRASTRUCTURE,
            "not of the template",
        ),
        ([], FailureClass.INFRASTRUCTURE, "providers or modules could not be installed"),
        (
            [diagnostic("Invalid expression", "Expected the start of an expression", file="main.tf", line=2)],
            FailureClass.BUILD,
            "main.tf:2: Invalid expression",
        ),
    ],
)
async def test_init_failures(
    fake: Fake, files: Path, tmp_path: Path, diagnostics: list[Any], failure_class: FailureClass, text: str
) -> None:
    fake.scenario({"init": {"stdout": diagnostics, "exit": 1}})
    error, _ = await failure(fake, files, tmp_path)
    assert error.failure_class is failure_class
    assert text in error.message
    assert [c["argv"][0] for c in fake.calls()] == ["init"]


async def test_unreadable_outputs_keep_the_build(fake: Fake, files: Path, tmp_path: Path) -> None:
    fake.scenario({"apply": {"state": "s"}, "output": {"stdout": ["{ not json"]}})
    result, logs = await run(fake, files, tmp_path)
    assert (result.state, result.outputs) == (b"s", {})
    assert any(level == "warn" and "could not read the outputs" in line for level, _, line in logs.records)


async def test_stop_without_a_transition_variable_runs_nothing(
    fake: Fake, files: Path, tmp_path: Path
) -> None:
    result, logs = await run(fake, files, tmp_path, transition=Transition.STOP, state=b"kept", build_number=2)
    assert result.state == b"kept"
    assert fake.calls() == []
    assert 'declares no variable "prebuildd_transition"' in logs.text()


async def test_stop_with_a_transition_variable_applies_with_stop(fake: Fake, tmp_path: Path) -> None:
    files = write_files(tmp_path / "files", {"main.tf": 'variable "prebuildd_transition" {}\n'})
    fake.scenario({"apply": {"state": "stopped"}})
    result, _ = await run(fake, files, tmp_path, transition=Transition.STOP, state=b"s", build_number=2)
    assert result.state == b"stopped"
    apply = fake.calls()[1]
    assert apply["argv"][0] == "apply" and apply["tfvars"] == {"prebuildd_transition": "stop"}


async def test_delete_destroys_and_reads_no_outputs(fake: Fake, files: Path, tmp_path: Path) -> None:
    fake.scenario({"destroy": {"state": "empty"}})
    result, _ = await run(fake, files, tmp_path, transition=Transition.DELETE, state=b"s", build_number=2)
    assert [c["argv"][0] for c in fake.calls()] == ["init", "destroy"]
    assert fake.calls()[1]["argv"] == ["destroy", "-auto-approve", "-input=false", "-json"]
    assert (result.state, result.outputs) == (b"empty", {})


async def test_a_state_file_shipped_with_the_template_is_not_used(
    fake: Fake, files: Path, tmp_path: Path
) -> None:
    (files / "terraform.tfstate").write_text("someone else's state")
    _, logs = await run(fake, files, tmp_path)
    assert fake.calls()[1]["state"] is None
    assert "the template ships terraform.tfstate" in logs.text()


async def test_a_missing_binary_is_an_infrastructure_failure(files: Path, tmp_path: Path) -> None:
    provisioner = TerraformProvisioner(str(tmp_path / "no-terraform"), plugin_cache_dir=tmp_path / "cache")
    with pytest.raises(ProvisionerFailure) as info:
        await provisioner.run_build(build_context(files, tmp_path / "data"), Logs())
    assert info.value.failure_class is FailureClass.INFRASTRUCTURE
    assert "install Terraform" in info.value.message


# --- stopping ------------------------------------------------------------------------------------------


async def test_timeout_interrupts_terraform(fake: Fake, files: Path, tmp_path: Path) -> None:
    fake.scenario(
        {"apply": {"stdout": [message("working")], "sleep": 60, "on_int": "exit", "state": "partial"}}
    )
    manifest = terraform_manifest('[terraform]\ntimeout = "1s"\n')
    error, logs = await failure(fake, files, tmp_path, manifest=manifest)
    assert error.failure_class is FailureClass.BUILD
    assert error.message.startswith("terraform apply timed out after 1s")
    assert "interrupted" in logs.lines("apply"), "terraform got SIGINT and could stop cleanly"
    assert isinstance(error, TerraformFailure) and error.state == b"partial"


async def test_cancel_kills_terraform_that_ignores_the_interrupt(
    fake: Fake, files: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    fake.scenario({"apply": {"sleep": 60, "on_int": "ignore", "pid_file": str(pid_file)}})
    task = asyncio.create_task(
        fake.provisioner(grace_seconds=0.3).run_build(build_context(files, tmp_path / "data"), Logs())
    )
    await wait_for(
        lambda: pid_file.exists() and bool(pid_file.read_text()), 10, "the fake terraform to start"
    )
    pid = int(pid_file.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: process_gone(pid), 10, "terraform to end after the cancel")


# --- import ------------------------------------------------------------------------------------------


async def test_import_validates_and_names_file_and_line(fake: Fake, files: Path) -> None:
    report = {
        "valid": False,
        "diagnostics": [
            {"severity": "warning", "summary": "Deprecated", "detail": ""},
            {
                "severity": "error",
                "summary": "Unsupported argument",
                "detail": 'An argument named "bogus" is not expected here.',
                "range": {"filename": "main.tf", "start": {"line": 7}},
            },
        ],
    }
    fake.scenario({"validate": {"stdout": [json.dumps(report, indent=2)], "exit": 1}})
    logs = Logs()
    with pytest.raises(ProvisionerFailure) as info:
        await fake.provisioner().import_version(ImportContext("v-1", files, terraform_manifest()), logs)
    assert info.value.message == (
        "the Terraform configuration is invalid:\n"
        'main.tf:7: Unsupported argument: An argument named "bogus" is not expected here.'
    )
    assert [c["argv"] for c in fake.calls()] == [
        ["init", "-input=false", "-json", "-backend=false"],
        ["validate", "-json"],
    ]
    assert ("warn", "validate", "Deprecated") in logs.records


async def test_import_declares_the_variables(fake: Fake, files: Path) -> None:
    fake.scenario({"validate": {"stdout": [json.dumps({"valid": True, "diagnostics": []})]}})
    manifest = terraform_manifest('[terraform]\nversion = "1.9"\n')
    result = await fake.provisioner().import_version(ImportContext("v-1", files, manifest), Logs())
    assert [(s.name, s.type.value, s.required) for s in result.parameters] == [
        ("size", "number", True),
        ("tags", "list(string)", True),
    ]
    assert result.warnings == (
        "[terraform].version: unknown key, ignored (prebuildd reads: timeout, vars, claim_build)",
    )


# --- which hosts advertise terraform -----------------------------------------------------------------


def test_registry_advertises_terraform_only_where_the_binary_is(
    fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREBUILDD_TERRAFORM", str(fake.binary))
    provisioners = available_provisioners()
    assert "terraform" in provisioners
    terraform = provisioners["terraform"]
    assert isinstance(terraform, TerraformProvisioner) and terraform.binary == str(fake.binary)

    monkeypatch.setenv("PREBUILDD_TERRAFORM", str(tmp_path / "missing"))
    assert "terraform" not in available_provisioners()

    monkeypatch.delenv("PREBUILDD_TERRAFORM")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert sorted(available_provisioners()) == ["echo", "exec"]
    monkeypatch.setenv("PATH", str(fake.binary.parent))
    assert "terraform" in available_provisioners()
