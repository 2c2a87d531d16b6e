"""Table tests of the claim rules: preset choice by id or by values, immutable differences, claim builds."""

from __future__ import annotations

from uuid import UUID

import pytest

from prebuildd.domain.claims import PoolPreset, choose_preset, claim_needs_build, has_claim_step
from prebuildd.domain.manifest import EchoConfig, EchoStep, ExecConfig, TemplateManifest, parse_manifest
from prebuildd.domain.parameters import ParameterSpec, ParameterType

APP = PoolPreset(UUID(int=1), "app", {"repo": "app"})
DOCS = PoolPreset(UUID(int=2), "docs", {"repo": "docs", "editor": "emacs"})
BARE = PoolPreset(UUID(int=3), "bare", {})
PRESETS = [APP, DOCS, BARE]
SPECS = [
    ParameterSpec("repo", default="app", mutable=False),
    ParameterSpec("editor", default="vim"),
    ParameterSpec("cpus", type=ParameterType.NUMBER, default="2"),
]


@pytest.mark.parametrize(
    ("explicit", "values", "preset", "differing"),
    [
        # An explicit preset wins, whatever the values say about other presets.
        (APP.id, {}, APP, {}),
        (BARE.id, {}, BARE, {}),
        (DOCS.id, {"repo": "docs"}, DOCS, {}),
        # A mutable value that differs still claims, and is carried to the claim build.
        (APP.id, {"editor": "nano"}, APP, {"editor": "nano"}),
        # The preset's default for a parameter it does not set counts as its value.
        (APP.id, {"editor": "vim"}, APP, {}),
        (APP.id, {"cpus": 4}, APP, {"cpus": "4"}),
        (APP.id, {"cpus": 2}, APP, {}),
        # An immutable value that differs: the prebuild was built with another one.
        (APP.id, {"repo": "other"}, None, {}),
        (DOCS.id, {"repo": "app"}, None, {}),
        # An explicit preset that is not a pool preset of the active version.
        (UUID(int=9), {}, None, {}),
        # By values: every value of the preset must be given and equal; the most specific preset first.
        (None, {"repo": "docs", "editor": "emacs"}, DOCS, {}),
        (None, {"repo": "app"}, APP, {}),
        (None, {"repo": "app", "editor": "nano"}, APP, {"editor": "nano"}),
        (None, {"repo": "docs"}, None, {}),
        (None, {}, None, {}),
        (None, {"repo": "other"}, None, {}),
        # Nulls compare with nothing.
        (None, {"repo": "app", "editor": None}, APP, {}),
        # An unknown parameter: no claim (that would drop it silently), the builder explains.
        (None, {"repo": "app", "unknown": "x"}, None, {}),
        (APP.id, {"unknown": "x"}, None, {}),
        # A value the parameter's type refuses: no claim, the builder explains.
        (APP.id, {"cpus": "many"}, None, {}),
    ],
)
def test_choose_preset(
    explicit: UUID | None, values: dict[str, object], preset: PoolPreset | None, differing: dict[str, str]
) -> None:
    assert choose_preset(PRESETS, SPECS, explicit, values) == (preset, differing)


def test_no_pool_presets_means_no_claim() -> None:
    assert choose_preset([], SPECS, APP.id, {"repo": "app"}) == (None, {})


ECHO_CLAIM = TemplateManifest("echo", echo=EchoConfig(steps={"claim": EchoStep()}))
ECHO_START = TemplateManifest("echo", echo=EchoConfig(steps={"start": EchoStep()}))
EXEC_CLAIM = TemplateManifest("exec", exec=ExecConfig(start="start.sh", claim="claim.sh"))
EXEC_START = TemplateManifest("exec", exec=ExecConfig(start="start.sh"))
TERRAFORM = TemplateManifest("terraform")
TERRAFORM_CLAIM = parse_manifest('provisioner = "terraform"\n[terraform]\nclaim_build = true\n')
TERRAFORM_NO_CLAIM = parse_manifest('provisioner = "terraform"\n[terraform]\nclaim_build = false\n')


@pytest.mark.parametrize(
    ("manifest", "step"),
    [
        (ECHO_CLAIM, True),
        (ECHO_START, False),
        (EXEC_CLAIM, True),
        (EXEC_START, False),
        (TERRAFORM, False),
        (TERRAFORM_CLAIM, True),
        (TERRAFORM_NO_CLAIM, False),
    ],
)
def test_has_claim_step(manifest: TemplateManifest, step: bool) -> None:
    assert has_claim_step(manifest) is step


@pytest.mark.parametrize(
    ("differing", "manifest", "needs"),
    [
        ({}, None, False),
        ({}, ECHO_START, False),
        ({}, ECHO_CLAIM, True),
        ({}, EXEC_CLAIM, True),
        ({"editor": "nano"}, None, True),
        ({"editor": "nano"}, ECHO_START, True),
        ({}, TERRAFORM, False),
        ({}, TERRAFORM_NO_CLAIM, False),
        ({}, TERRAFORM_CLAIM, True),
        ({"editor": "nano"}, TERRAFORM, True),
    ],
)
def test_claim_needs_build(differing: dict[str, str], manifest: TemplateManifest | None, needs: bool) -> None:
    assert claim_needs_build(differing, manifest) is needs
