"""The manifest of a Terraform template: the `[terraform]` section, and presets naming Terraform variables."""

from __future__ import annotations

import pytest

from prebuildd.domain.manifest import (
    ManifestError,
    PresetSpec,
    TerraformConfig,
    parse_manifest,
    terraform_config,
)


def test_the_terraform_section() -> None:
    manifest = parse_manifest(
        'provisioner = "terraform"\n[terraform]\ntimeout = "30m"\nvars = { region = "eu", n = [1] }\nx = 1\n'
    )
    assert terraform_config(manifest) == TerraformConfig(
        timeout_seconds=1800.0, vars={"region": "eu", "n": [1]}, unknown_keys=("x",)
    )
    assert terraform_config(parse_manifest('provisioner = "terraform"')) == TerraformConfig()


@pytest.mark.parametrize(
    ("line", "claim_build"), [("", False), ("claim_build = false", False), ("claim_build = true", True)]
)
def test_claim_build_is_off_unless_asked_for(line: str, claim_build: bool) -> None:
    manifest = parse_manifest(f'provisioner = "terraform"\n[terraform]\n{line}\n')
    config = terraform_config(manifest)
    assert config.claim_build is claim_build
    assert config.unknown_keys == ()


@pytest.mark.parametrize(
    ("section", "key", "reason"),
    [
        ('timeout = "soon"', "terraform.timeout", "invalid duration"),
        ("timeout = 0", "terraform.timeout", "greater than zero"),
        ("vars = 1", "terraform.vars", "expected a table"),
        (
            'vars = { prebuildd_workspace_name = "x" }',
            "terraform.vars.prebuildd_workspace_name",
            "workspace facts",
        ),
        ('vars = { "a b" = 1 }', "terraform.vars.a b", "invalid Terraform variable name"),
        ('claim_build = "yes"', "terraform.claim_build", "expected a boolean"),
        ("claim_build = 1", "terraform.claim_build", "expected a boolean"),
    ],
)
def test_terraform_section_errors(section: str, key: str, reason: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(f'provisioner = "terraform"\n[terraform]\n{section}\n')
    assert info.value.key == key
    assert reason in info.value.reason


def test_presets_may_name_variables_the_manifest_does_not_declare() -> None:
    text = """
provisioner = "terraform"
[[parameters]]
name = "cpu"
type = "number"
validation = { max = 8 }
[[presets]]
name = "p"
parameters = { cpu = 4.0, region = "eu", zones = ["a"], debug = true, size = 2.50 }
"""
    (preset,) = parse_manifest(text).presets
    assert preset == PresetSpec(
        name="p", parameters={"cpu": "4", "region": "eu", "zones": '["a"]', "debug": "true", "size": "2.5"}
    )
    # Values of declared parameters are still checked at push time; the others after the import.
    with pytest.raises(ManifestError, match="above the maximum 8"):
        parse_manifest(text.replace("cpu = 4.0", "cpu = 9"))
    with pytest.raises(ManifestError, match="unknown parameter"):
        parse_manifest(text.replace('provisioner = "terraform"', 'provisioner = "echo"'))
