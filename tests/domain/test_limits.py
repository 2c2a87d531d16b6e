"""The one table of size limits: the parameter rules, the manifest and the docs all use it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from prebuildd.domain import limits
from prebuildd.domain.manifest import ManifestError, parse_manifest
from prebuildd.domain.parameters import ParameterError, ParameterSpec, canonical_value, resolve_parameters

DOCS = Path(__file__).resolve().parents[2] / "docs" / "templates.md"
VALUE = limits.PARAMETER_VALUE.maximum


def test_a_value_is_measured_in_utf8_bytes() -> None:
    spec = ParameterSpec(name="blob")
    assert canonical_value(spec, "x" * VALUE) == "x" * VALUE
    with pytest.raises(ParameterError, match=rf"parameter `blob`: value too large: {VALUE + 1} bytes"):
        canonical_value(spec, "x" * (VALUE + 1))
    with pytest.raises(ParameterError, match="value too large"):
        canonical_value(spec, "é" * (VALUE // 2 + 1))  # fewer characters than the limit, more bytes


def test_the_values_of_one_build_are_bounded_together() -> None:
    count = limits.PARAMETER_VALUES_TOTAL.maximum // VALUE + 1
    specs = [ParameterSpec(name=f"p{i}") for i in range(count)]
    fits = {f"p{i}": "x" * (VALUE - 10) for i in range(count - 1)}
    assert resolve_parameters(specs, explicit=fits) == fits
    with pytest.raises(ParameterError, match="too large together"):
        resolve_parameters(specs, explicit={**fits, f"p{count - 1}": "x" * (VALUE - 10)})


def test_the_manifest_bounds_descriptions_names_and_preset_values() -> None:
    long = "d" * (limits.DESCRIPTION.maximum + 1)
    with pytest.raises(ManifestError, match=rf"description.*{limits.DESCRIPTION.maximum}"):
        parse_manifest(f'provisioner = "echo"\ndescription = "{long}"\n')
    base = 'provisioner = "echo"\n[[parameters]]\nname = "blob"\n'
    with pytest.raises(ManifestError, match=r"presets\[big\]\.parameters\.blob.*value too large"):
        parse_manifest(base + f'[[presets]]\nname = "big"\nparameters = {{ blob = "{"v" * (VALUE + 1)}" }}\n')
    with pytest.raises(ManifestError, match="too long"):
        parse_manifest(base + f'[[presets]]\nname = "{"n" * 65}"\n')
    with pytest.raises(ManifestError, match=r"parameters\[0\]\.name.*too long"):
        parse_manifest(f'provisioner = "echo"\n[[parameters]]\nname = "{"p" * 65}"\n')


@pytest.mark.parametrize("limit", limits.LIMITS, ids=lambda limit: limit.what)
def test_every_limit_is_documented_with_its_value(limit: limits.Limit) -> None:
    lines = DOCS.read_text().splitlines()
    rows = [line for line in lines if re.match(rf"\| {re.escape(limit.what)} [|(]", line)]
    assert rows, f"docs/templates.md has no row for {limit.what!r}"
    assert re.search(rf"\| {limit.maximum} {limit.unit}\b", rows[0]), rows[0]
