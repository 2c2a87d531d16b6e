"""Variables to parameters (types, defaults, validation), merging with the manifest, values for a build."""

from __future__ import annotations

from pathlib import Path

import pytest

from prebuildd.domain.manifest import TerraformConfig, parse_manifest
from prebuildd.domain.parameters import ParameterSpec, ParameterType, validate_value
from prebuildd.provisioner.daemon import agent_env
from prebuildd.provisioner.terraform_hcl import TerraformVariable, read_variables
from prebuildd.provisioner.terraform_vars import (
    FACTS,
    ParameterConflict,
    build_tfvars,
    fact_values,
    manifest_parameter_keys,
    merge_parameters,
    search_regex,
    tfvars_value,
    variable_parameter,
)
from tests.support.terraform import build_context, terraform_manifest, write_files


def variables(tmp_path: Path, text: str) -> dict[str, TerraformVariable]:
    write_files(tmp_path, {"variables.tf": text})
    return {v.name: v for v in read_variables(tmp_path)}


def spec_of(tmp_path: Path, text: str) -> ParameterSpec:
    (var,) = variables(tmp_path, text).values()
    spec, warnings = variable_parameter(var)
    assert warnings == []
    return spec


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            'variable "a" {\n  type = string\n  description = "An a."\n}',
            ParameterSpec(name="a", required=True, description="An a."),
        ),
        (
            'variable "a" {\n  type = number\n  default = 2.50\n}',
            ParameterSpec("a", ParameterType.NUMBER, default="2.5"),
        ),
        (
            'variable "a" {\n  type = bool\n  default = false\n}',
            ParameterSpec("a", ParameterType.BOOL, default="false"),
        ),
        (
            'variable "a" {\n  type = set(string)\n  default = ["x", 1]\n}',
            ParameterSpec("a", ParameterType.LIST_STRING, default='["x","1"]'),
        ),
        (
            'variable "a" {\n  type = map(number)\n  default = { x = 1 }\n}',
            ParameterSpec("a", ParameterType.STRING, default='{"x":1}'),
        ),
        ('variable "a" {\n  default = true\n}', ParameterSpec("a", ParameterType.BOOL, default="true")),
        (
            'variable "a" {\n  default = ["p"]\n}',
            ParameterSpec("a", ParameterType.LIST_STRING, default='["p"]'),
        ),
        ('variable "a" {\n  type = string\n  default = null\n}', ParameterSpec("a")),
        ('variable "a" {\n  type = string\n  default = 3\n}', ParameterSpec("a", default="3")),
        ('variable "a" {}', ParameterSpec("a", required=True)),
    ],
)
def test_types_and_defaults(tmp_path: Path, block: str, expected: ParameterSpec) -> None:
    assert spec_of(tmp_path, block) == expected


def test_regex_bounds_and_options_are_read_from_validation(tmp_path: Path) -> None:
    found = variables(
        tmp_path,
        """
variable "name" {
  type = string
  validation {
    condition     = can(regex("^[a-z]+$", var.name)) && length(var.name) < 20
    error_message = "lowercase"
  }
}
variable "size" {
  type = number
  validation {
    condition     = (var.size >= 1) && var.size <= 8 && -5 <= var.size
    error_message = "1 to 8"
  }
}
variable "zone" {
  type    = string
  default = "eu"
  validation {
    condition     = contains(["eu", "us"], var.zone)
    error_message = "eu or us"
  }
}
variable "host" {
  type = string
  validation {
    condition     = length(regexall("\\\\.example\\\\.com", var.host)) > 0
    error_message = "an example.com host"
  }
}
variable "other" {
  type = string
  validation {
    condition     = var.other != "x" || can(regex("^a", var.other))
    error_message = "not understood"
  }
}
""",
    )
    name, _ = variable_parameter(found["name"])
    assert (name.validation_regex, name.validation_error) == ("^[a-z]+$", "lowercase")
    size, _ = variable_parameter(found["size"])
    assert (size.validation_min, size.validation_max, size.validation_error) == (1.0, 8.0, "1 to 8")
    zone, _ = variable_parameter(found["zone"])
    assert zone.options == ("eu", "us") and zone.validation_error == "eu or us"
    host, _ = variable_parameter(found["host"])
    assert host.validation_regex == search_regex(r"\.example\.com")
    validate_value(host, "www.example.com")
    with pytest.raises(ValueError, match=r"an example\.com host"):
        validate_value(host, "example.org")
    other, _ = variable_parameter(found["other"])
    assert other.validation_regex is None and other.validation_error is None


def test_a_validation_the_default_breaks_is_not_carried_over(tmp_path: Path) -> None:
    (var,) = variables(
        tmp_path,
        'variable "a" {\n  default = "UP"\n  validation {\n    condition = can(regex("^[a-z]+$", var.a))\n'
        '    error_message = "m"\n  }\n}\n',
    ).values()
    spec, warnings = variable_parameter(var)
    assert spec.validation_regex is None
    assert "could not be carried over" in warnings[0] and "variables.tf:1" in warnings[0]


def test_search_regex_keeps_anchored_patterns() -> None:
    assert search_regex("^a$") == "^a$"
    assert search_regex("a") == "(?s:.*?)(?:a)(?s:.*)"


MANIFEST = """
provisioner = "terraform"
[terraform]
vars = { region = "eu" }
[[parameters]]
name = "project"
mutable = false
[[parameters]]
name = "size"
type = "string"
description = "From the manifest."
[[parameters]]
name = "extra"
[[presets]]
name = "p"
parameters = { project = "x", cpus = 2 }
"""

VARIABLES = """
variable "project" {
  type        = string
  default     = "hello"
  description = "From Terraform."
  validation {
    condition     = can(regex("^[a-z]+$", var.project))
    error_message = "lowercase"
  }
}
variable "size" {
  type    = number
  default = 2
}
variable "cpus" { type = number }
variable "region" { type = string }
variable "prebuildd_workspace_name" { type = string }
variable "prebuildd_colour" { type = string }
"""


def test_merge_with_the_manifest(tmp_path: Path) -> None:
    manifest = parse_manifest(MANIFEST)
    assert manifest.presets[0].parameters == {"project": "x", "cpus": "2"}, "kept for after the import"
    specs, warnings = merge_parameters(
        manifest.parameters,
        manifest_parameter_keys(MANIFEST),
        list(variables(tmp_path, VARIABLES).values()),
        TerraformConfig(vars={"region": "eu"}),
    )
    by_name = {s.name: s for s in specs}
    assert list(by_name) == ["project", "size", "extra", "cpus"]
    assert by_name["project"] == ParameterSpec(
        name="project",
        default="hello",
        mutable=False,
        validation_regex="^[a-z]+$",
        validation_error="lowercase",
        description="From Terraform.",
    )
    # The manifest said string explicitly: it wins, with a warning; its description wins too.
    assert by_name["size"] == ParameterSpec("size", default="2", description="From the manifest.")
    assert by_name["cpus"] == ParameterSpec("cpus", ParameterType.NUMBER, required=True)
    assert any("`size`: prebuildd.toml says string" in w for w in warnings)
    assert any(
        '`extra` is declared in prebuildd.toml but the configuration declares no variable "extra"' in w
        for w in warnings
    )
    assert any("`prebuildd_colour`" in w and "named like a workspace fact" in w for w in warnings)
    assert len(warnings) == 3


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        ('[[parameters]]\nname = "prebuildd_x"\n', "reserved for the workspace facts"),
        ('[[parameters]]\nname = "a"\nvalidation = { regex = "^[0-9]+$" }\n', "default 'hello'"),
    ],
)
def test_merge_conflicts(tmp_path: Path, manifest: str, reason: str) -> None:
    text = 'provisioner = "terraform"\n' + manifest
    var = 'variable "a" {\n  default = "hello"\n}\nvariable "prebuildd_x" {}\n'
    with pytest.raises(ParameterConflict, match=reason):
        merge_parameters(
            parse_manifest(text).parameters,
            manifest_parameter_keys(text),
            list(variables(tmp_path, var).values()),
            TerraformConfig(),
        )


def test_tfvars_hold_declared_variables_only_with_typed_values(tmp_path: Path) -> None:
    declared = list(
        variables(
            tmp_path,
            """
variable "n" { type = number }
variable "b" { type = bool }
variable "l" { type = list(string) }
variable "m" { type = map(string) }
variable "s" { type = string }
variable "fixed" {}
variable "prebuildd_workspace_owner" {}
variable "prebuildd_is_prebuild" {}
variable "prebuildd_agent_tokens" {}
""",
        ).values()
    )
    ctx = build_context(
        tmp_path,
        tmp_path / "data",
        manifest=terraform_manifest('agents = ["main", "side-car"]'),
        is_prebuild=True,
        extra_env=agent_env({"main": "t1", "side-car": "t2"}),
    )
    facts = fact_values(ctx, tmp_path / "data")
    assert set(facts) == set(FACTS)
    values, unused = build_tfvars(
        declared,
        {
            "n": "2.5",
            "b": "true",
            "l": '["a"]',
            "m": '{"k":"v"}',
            "s": "[not json",
            "nope": "x",
            "prebuildd_x": "y",
        },
        facts,
        {"fixed": {"any": 1}, "undeclared": 1},
    )
    assert values == {
        "n": 2.5,
        "b": True,
        "l": ["a"],
        "m": {"k": "v"},
        "s": "[not json",
        "fixed": {"any": 1},
        "prebuildd_workspace_owner": "alice",
        "prebuildd_is_prebuild": True,
        "prebuildd_agent_tokens": {"main": "t1", "side-car": "t2"},
    }
    assert unused == ["nope", "prebuildd_x"]


def test_one_agent_token(tmp_path: Path) -> None:
    ctx = build_context(
        tmp_path,
        tmp_path,
        manifest=terraform_manifest('agents = ["main"]'),
        extra_env=agent_env({"main": "t"}),
    )
    facts = fact_values(ctx, tmp_path)
    assert (facts["prebuildd_agent_token"], facts["prebuildd_agent_tokens"]) == ("t", {"main": "t"})
    no_tokens = fact_values(build_context(tmp_path, tmp_path), tmp_path)
    assert (no_tokens["prebuildd_agent_token"], no_tokens["prebuildd_agent_tokens"]) == ("", {})


def test_unsure_values_are_passed_as_strings() -> None:
    number = TerraformVariable("n", "f.tf", 1, type="number")
    assert tfvars_value(number, "oops") == "oops"
    assert tfvars_value(TerraformVariable("b", "f.tf", 1, type="bool"), "1") == "1"


def test_the_docs_list_every_workspace_fact_and_what_a_claim_build_gets() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "templates.md").read_text()
    facts_table = docs.split("### Workspace facts", 1)[1].split("\n### ", 1)[0]
    claim_table = docs.split("## Claim builds", 1)[1].split("**Values given at claim time.**", 1)[0]
    for name in FACTS:
        assert f"`{name}`" in facts_table, f"{name} is missing from the workspace facts of docs/templates.md"
        listed = f"`{name}`" in claim_table or (
            name == "prebuildd_agent_tokens" and "_token(s)`" in claim_table
        )
        assert listed, f"{name} is missing from the claim build table of docs/templates.md"
