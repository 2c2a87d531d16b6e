"""The echo provisioner plays the steps scripted in the manifest."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from prebuildd.domain.jobs import FailureClass, Transition
from prebuildd.domain.manifest import EchoConfig, EchoStep, TemplateManifest
from prebuildd.domain.parameters import ParameterSpec
from prebuildd.provisioner.base import BuildContext, ImportContext, ProvisionerFailure
from prebuildd.provisioner.echo import EchoProvisioner
from prebuildd.provisioner.registry import available_provisioners
from tests.support.logs import Logs
from tests.support.provisioning import build_context


def manifest(**steps: EchoStep) -> TemplateManifest:
    return TemplateManifest(
        provisioner="echo",
        parameters=(ParameterSpec(name="cpu"),),
        echo=EchoConfig(steps=steps),
    )


def context(m: TemplateManifest, tmp_path: Path, **overrides: Any) -> BuildContext:
    return build_context(m, tmp_path, **({"parameters": {"cpu": "2"}} | overrides))


async def test_success_logs_outputs_and_state(tmp_path: Path) -> None:
    m = manifest(start=EchoStep(logs=("one", "two"), outputs={"url": "http://x"}))
    logs = Logs()
    result = await EchoProvisioner().run_build(context(m, tmp_path, build_number=3), logs)
    assert result.state == b"echo-state:3"
    assert result.outputs == {"url": "http://x"}
    assert logs.records == [("info", "start", "one"), ("info", "start", "two")]


async def test_unscripted_step_and_missing_config_succeed(tmp_path: Path) -> None:
    logs = Logs()
    bare = TemplateManifest(provisioner="echo")
    result = await EchoProvisioner().run_build(context(bare, tmp_path, transition=Transition.STOP), logs)
    assert result.state == b"echo-state:1"
    assert result.outputs == {}
    result = await EchoProvisioner().run_build(context(manifest(), tmp_path), logs)
    assert result.state == b"echo-state:1"
    assert logs.records == []


async def test_scripted_failure(tmp_path: Path) -> None:
    m = manifest(
        delete=EchoStep(result="failure", error="boom", failure_class=FailureClass.INFRASTRUCTURE),
        stop=EchoStep(result="failure", logs=("going down",)),
    )
    logs = Logs()
    with pytest.raises(ProvisionerFailure) as info:
        await EchoProvisioner().run_build(context(m, tmp_path, transition=Transition.DELETE), logs)
    assert info.value.message == "boom"
    assert info.value.failure_class is FailureClass.INFRASTRUCTURE

    with pytest.raises(ProvisionerFailure) as info:
        await EchoProvisioner().run_build(context(m, tmp_path, transition=Transition.STOP), logs)
    assert info.value.message == "echo: scripted failure"
    assert info.value.failure_class is FailureClass.BUILD
    assert logs.records == [("info", "stop", "going down")]


async def test_claim_build_plays_the_claim_step(tmp_path: Path) -> None:
    m = manifest(claim=EchoStep(logs=("personalising",), outputs={"claimed": True}))
    logs = Logs()
    result = await EchoProvisioner().run_build(context(m, tmp_path, is_claim=True, build_number=2), logs)
    assert result.outputs == {"claimed": True}
    assert logs.records == [("info", "claim", "personalising")]


async def test_delay(tmp_path: Path) -> None:
    m = manifest(start=EchoStep(delay_seconds=0.2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await EchoProvisioner().run_build(context(m, tmp_path), Logs())
    assert loop.time() - started >= 0.2


async def test_block_waits_until_canceled(tmp_path: Path) -> None:
    m = manifest(start=EchoStep(logs=("blocking",), block=True))
    logs = Logs()
    task = asyncio.create_task(EchoProvisioner().run_build(context(m, tmp_path), logs))
    await asyncio.wait_for(logs.changed.wait(), 5)
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_import_step(tmp_path: Path) -> None:
    ok = manifest()
    result = await EchoProvisioner().import_version(
        ImportContext(version_id="v-1", files_dir=tmp_path, manifest=ok), Logs()
    )
    assert result.parameters == (ParameterSpec(name="cpu"),)

    failing = TemplateManifest(
        provisioner="echo",
        echo=EchoConfig(steps={"import": EchoStep(result="failure", error="bad import", logs=("x",))}),
    )
    logs = Logs()
    with pytest.raises(ProvisionerFailure, match="bad import"):
        await EchoProvisioner().import_version(
            ImportContext(version_id="v-1", files_dir=tmp_path, manifest=failing), logs
        )
    assert logs.records == [("info", "import", "x")]


def test_registry_has_echo_and_exec() -> None:
    provisioners = available_provisioners()
    # terraform too where the binary is found: tests/provisioner/test_terraform_protocol.py
    assert {"echo", "exec"} <= set(provisioners) <= {"echo", "exec", "terraform"}
    assert all(kind == p.kind for kind, p in provisioners.items())
