"""The pure rules of a claim: which pool preset a creation may claim from, with which values, and whether the
claim must run a build (a claim step, a Terraform claim build, or values that differ from the prebuild's). No I/O: the claim service in
``prebuilds/claim.py`` reads the context, asks these rules, then runs the one claim statement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID

from prebuildd.domain.manifest import ManifestError, TemplateManifest, terraform_config
from prebuildd.domain.parameters import ParameterError, ParameterSpec, canonical_value


@dataclass(frozen=True)
class PoolPreset:
    """A preset of the template's active version that keeps a pool of prebuilds."""

    id: UUID
    name: str
    parameters: Mapping[str, str]


def has_claim_step(manifest: TemplateManifest) -> bool:
    """Whether the template personalises a claimed prebuild: an exec claim script, an echo claim step, or
    ``[terraform] claim_build = true`` (re-apply as the new owner)."""
    if manifest.exec is not None and manifest.exec.claim:
        return True
    if manifest.provisioner == "terraform" and manifest.terraform:
        try:
            return terraform_config(manifest).claim_build
        except ManifestError:  # refused at push; a claim of such a version runs no claim build
            return False
    return manifest.echo is not None and "claim" in manifest.echo.steps


def claim_needs_build(differing: Mapping[str, str], manifest: TemplateManifest | None) -> bool:
    """A claim runs a build when the user's values differ from the prebuild's or the template has a claim step;
    otherwise it is the claim statement alone."""
    return bool(differing) or (manifest is not None and has_claim_step(manifest))


def choose_preset(
    presets: Sequence[PoolPreset],
    specs: Sequence[ParameterSpec],
    explicit_preset: UUID | None,
    values: Mapping[str, object],
) -> tuple[PoolPreset | None, dict[str, str]]:
    """The pool preset a creation can claim from, and the explicit values that differ from it (mutable ones).

    An explicit preset wins; with parameters only, the preset whose values all equal the given ones, the one
    with most parameters first. A value that differs from the preset's for an immutable parameter means no claim:
    the prebuild was built with another value. A value the creation could not build with (an unknown name, a
    value of the wrong type) means no claim either: the builder then refuses it, naming the parameter.
    """
    by_name = {s.name: s for s in specs}
    given: dict[str, str] = {}
    for name, raw in values.items():
        if raw is None:
            continue
        spec = by_name.get(name)
        if spec is None:
            return None, {}  # a cold build refuses an unknown name (400); a claim must not drop it silently
        try:
            given[name] = canonical_value(spec, raw)
        except ParameterError:
            return None, {}  # the builder will refuse it with a clear message
    if explicit_preset is not None:
        candidates = [p for p in presets if p.id == explicit_preset]
    else:
        candidates = sorted(
            (p for p in presets if p.parameters and all(given.get(k) == v for k, v in p.parameters.items())),
            key=lambda p: -len(p.parameters),
        )
    for preset in candidates:
        differing = {k: v for k, v in given.items() if preset.parameters.get(k, _default(by_name, k)) != v}
        if any(not by_name[k].mutable for k in differing):
            return None, {}
        return preset, differing
    return None, {}


def _default(specs: Mapping[str, ParameterSpec], name: str) -> str | None:
    spec = specs.get(name)
    return spec.default if spec else None
