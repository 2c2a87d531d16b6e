"""Terraform variables and prebuildd: which become parameters at import, and what a build passes to them.

Import: each ``variable`` block of the root module becomes a declared parameter, except the workspace facts
(variables named ``prebuildd_*``) and the fixed ``[terraform].vars``. Its type maps to a parameter type
(``string``, ``number``, ``bool``, ``list(string)`` and ``set(string)``; any other type becomes a string parameter
holding JSON); its default, description and the ``validation`` conditions that read as a parameter rule
(``can(regex("...", var.x))``, ``var.x >= N``, ``contains([...], var.x)``, joined by ``&&``) come along. A
condition that reads otherwise is left to Terraform, which checks every condition at plan time anyway: each
translated rule is one of the conjuncts, so it never refuses a value Terraform would accept. A parameter the
manifest also declares keeps what the manifest says; what it leaves out comes from the variable.

Build: ``prebuildd.auto.tfvars.json`` holds values for declared variables only (Terraform warns about, and
a future version refuses, values for undeclared ones): the fixed vars, the parameters, then the facts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from prebuildd.domain.manifest import TERRAFORM_FACT_PREFIX, TerraformConfig
from prebuildd.domain.parameters import (
    ParameterError,
    ParameterSpec,
    ParameterType,
    canonical_value,
    format_number,
    validate_value,
)
from prebuildd.provisioner.base import BuildContext
from prebuildd.provisioner.terraform_hcl import (
    NO_DEFAULT,
    UNREADABLE,
    TerraformVariable,
    Token,
    significant,
)

TFVARS_FILE = "prebuildd.auto.tfvars.json"
TRANSITION_VARIABLE = "prebuildd_transition"

FACTS: Mapping[str, str] = {
    "prebuildd_workspace_id": "the workspace's id (stable for its whole life, claims included)",
    "prebuildd_workspace_name": "the workspace's name (changes when a prebuild is claimed)",
    "prebuildd_workspace_owner": "the owner's user name (the prebuilds user until a claim)",
    "prebuildd_workspace_owner_id": "the owner's id (changes when a prebuild is claimed)",
    "prebuildd_template": "the template's name",
    "prebuildd_template_version_id": "the template version being built",
    "prebuildd_transition": '"start", "stop" or "delete"',
    "prebuildd_build_number": "the build's number (1, 2, ...)",
    "prebuildd_preset": 'the preset the workspace was built from, or ""',
    "prebuildd_is_prebuild": "true while the workspace is an unclaimed prebuild",
    "prebuildd_is_claim": "true for the build that hands a prebuild to its new owner",
    "prebuildd_access_url": "the URL agents use to reach the server",
    "prebuildd_data_dir": "a directory on the provisioner host kept across the workspace's builds",
    "prebuildd_agent_token": 'the token of the template\'s only agent on a start build, else ""',
    "prebuildd_agent_tokens": "map of agent name to token on a start build (empty on other builds)",
}
"""Workspace facts: a variable of one of these names receives the value when the configuration declares it."""

_SIMPLE_TYPES = {
    "string": ParameterType.STRING,
    "number": ParameterType.NUMBER,
    "bool": ParameterType.BOOL,
    "list(string)": ParameterType.LIST_STRING,
    "set(string)": ParameterType.LIST_STRING,
}


# --- types and values --------------------------------------------------------------------------------


@dataclass(frozen=True)
class VariableKind:
    type: ParameterType
    json: bool = False
    """The parameter holds the variable's value as JSON text (a type prebuildd parameters cannot express)."""


def variable_kind(var: TerraformVariable) -> VariableKind:
    if var.type in _SIMPLE_TYPES:
        return VariableKind(_SIMPLE_TYPES[var.type])
    if var.type not in (None, "any"):
        return VariableKind(ParameterType.STRING, json=True)
    # No type constraint: what the default looks like, else a string.
    default = var.default
    if isinstance(default, bool):
        return VariableKind(ParameterType.BOOL)
    if isinstance(default, int | float):
        return VariableKind(ParameterType.NUMBER)
    if isinstance(default, list) and all(isinstance(item, str) for item in default):
        return VariableKind(ParameterType.LIST_STRING)
    if isinstance(default, dict | list):
        return VariableKind(ParameterType.STRING, json=True)
    return VariableKind(ParameterType.STRING)


def _compact_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _scalar_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return format_number(value)
    if isinstance(value, str):
        return value
    return _compact_json(value)


def canonical_default(var: TerraformVariable, kind: VariableKind) -> str | None:
    """The variable's default as a canonical parameter value; None when absent, null or unreadable."""
    default = var.default
    if default is NO_DEFAULT or default is UNREADABLE or default is None:
        return None
    if kind.json:
        return _compact_json(default)
    raw: object = default
    if kind.type is ParameterType.LIST_STRING and isinstance(default, list):
        raw = [_scalar_text(item) for item in default]
    elif kind.type is ParameterType.STRING:
        raw = _scalar_text(default)
    try:
        return canonical_value(ParameterSpec(name=var.name, type=kind.type), raw)
    except ParameterError:
        return None


def tfvars_value(var: TerraformVariable, value: str) -> Any:
    """A canonical parameter value as the JSON value the variable takes (the string itself when unsure)."""
    kind = variable_kind(var)
    if kind.type is ParameterType.STRING and not kind.json:
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    if kind.type is ParameterType.BOOL and not isinstance(decoded, bool):
        return value
    if kind.type is ParameterType.NUMBER and (
        isinstance(decoded, bool) or not isinstance(decoded, int | float)
    ):
        return value
    if kind.type is ParameterType.LIST_STRING and not isinstance(decoded, list):
        return value
    return decoded


# --- validation conditions ---------------------------------------------------------------------------

_Symbol = tuple[str, Any]
"""("S", string) for a string literal, ("N", number), ("V", name) for ``var.name``, ("T", token text)."""


def _symbols(tokens: Sequence[Token]) -> list[_Symbol]:
    items = significant(tokens)
    out: list[_Symbol] = []
    i = 0
    while i < len(items):
        t = items[i]
        if t.kind in ("string", "heredoc"):
            out.append(("S", t.value) if t.value is not None else ("T", t.text))
        elif t.kind == "number":
            negative = bool(out) and out[-1] == ("T", "-") and (len(out) == 1 or out[-2][0] == "T")
            if negative:
                out[-1] = ("N", -t.value)
            else:
                out.append(("N", t.value))
        elif (
            t.kind == "ident"
            and t.text == "var"
            and i + 2 < len(items)
            and items[i + 1].text == "."
            and items[i + 2].kind == "ident"
        ):
            out.append(("V", items[i + 2].text))
            i += 2
        else:
            out.append(("T", t.text))
        i += 1
    return out


def _conjuncts(symbols: list[_Symbol]) -> list[list[_Symbol]]:
    """Split on ``&&`` outside parentheses, dropping parentheses around a whole part."""
    parts: list[list[_Symbol]] = [[]]
    depth = 0
    for sym in symbols:
        if sym[0] == "T" and sym[1] in ("(", "[", "{"):
            depth += 1
        elif sym[0] == "T" and sym[1] in (")", "]", "}"):
            depth -= 1
        if depth == 0 and sym == ("T", "&&"):
            parts.append([])
        else:
            parts[-1].append(sym)
    result: list[list[_Symbol]] = []
    for part in parts:
        stripped = part
        while (
            len(stripped) >= 2
            and stripped[0] == ("T", "(")
            and stripped[-1] == ("T", ")")
            and _wraps(stripped)
        ):
            stripped = stripped[1:-1]
        if len(stripped) != len(part):
            result.extend(_conjuncts(stripped))
        else:
            result.append(part)
    return result


def _wraps(part: list[_Symbol]) -> bool:
    """The first parenthesis closes at the very end."""
    depth = 0
    for i, sym in enumerate(part):
        if sym == ("T", "("):
            depth += 1
        elif sym == ("T", ")"):
            depth -= 1
            if depth == 0 and i != len(part) - 1:
                return False
    return True


def search_regex(pattern: str) -> str:
    """Terraform's ``regex`` finds a match anywhere; parameter regexes must match the whole value."""
    if pattern.startswith("^") and pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern
    return f"(?s:.*?)(?:{pattern})(?s:.*)"


@dataclass
class _Rules:
    regex: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    options: tuple[str, ...] = ()

    def any(self) -> bool:
        return bool(
            self.regex is not None or self.minimum is not None or self.maximum is not None or self.options
        )


def _read_conjunct(part: list[_Symbol], name: str, kind: VariableKind, rules: _Rules) -> None:
    me = ("V", name)
    kinds = "".join(sym[0] for sym in part)
    texts = [sym[1] if sym[0] == "T" else None for sym in part]
    if kind.json:
        return
    if kind.type is ParameterType.STRING and (
        (
            texts[:4] == ["can", "(", "regex", "("]
            and kinds == "TTTTSTVTT"
            and part[6] == me
            and texts[5] == ","
        )
        or (
            texts[:4] == ["length", "(", "regexall", "("]
            and kinds == "TTTTSTVTTTN"
            and part[6] == me
            and texts[5] == ","
            and (texts[9], part[10][1]) in ((">", 0), ("!=", 0), (">=", 1))
        )
    ):
        pattern = search_regex(part[4][1])
        try:
            re.compile(pattern)
        except re.error:
            return
        rules.regex = rules.regex or pattern
        return
    if kind.type is ParameterType.NUMBER and kinds in ("VTN", "NTV"):
        op = texts[1]
        var_first = kinds == "VTN"
        if (var_first and part[0] != me) or (not var_first and part[2] != me):
            return
        bound = float(part[2][1] if var_first else part[0][1])
        if (op == ">=" and var_first) or (op == "<=" and not var_first):
            rules.minimum = bound if rules.minimum is None else max(rules.minimum, bound)
        elif (op == "<=" and var_first) or (op == ">=" and not var_first):
            rules.maximum = bound if rules.maximum is None else min(rules.maximum, bound)
        return
    if (
        kind.type in (ParameterType.STRING, ParameterType.NUMBER)
        and texts[:3] == ["contains", "(", "["]
        and part[-1] == ("T", ")")
        and len(part) >= 7
        and part[-2] == me
        and part[-3] == ("T", ",")
        and part[-4] == ("T", "]")
    ):
        elements = [sym for sym in part[3:-4] if sym != ("T", ",")]
        wanted = "S" if kind.type is ParameterType.STRING else "N"
        if elements and all(sym[0] == wanted for sym in elements) and not rules.options:
            rules.options = tuple(_scalar_text(sym[1]) for sym in elements)


def validation_rules(var: TerraformVariable, kind: VariableKind) -> tuple[_Rules, str | None]:
    """The parameter rules the variable's validation conditions imply, and the message to show with them."""
    rules = _Rules()
    message: str | None = None
    for check in var.validations:
        before = replace(rules)
        for part in _conjuncts(_symbols(check.condition)):
            _read_conjunct(part, var.name, kind, rules)
        if rules != before and message is None:
            message = check.error_message
    return rules, message


# --- parameters --------------------------------------------------------------------------------------


def variable_parameter(var: TerraformVariable) -> tuple[ParameterSpec, list[str]]:
    """The parameter a variable declares, and warnings about what could not be carried over."""
    warnings: list[str] = []
    kind = variable_kind(var)
    rules, message = validation_rules(var, kind)
    spec = ParameterSpec(
        name=var.name,
        type=kind.type,
        required=var.default is NO_DEFAULT,
        default=canonical_default(var, kind),
        options=rules.options,
        validation_regex=rules.regex,
        validation_min=rules.minimum,
        validation_max=rules.maximum,
        validation_error=message if rules.any() else None,
        description=var.description,
    )
    if spec.default is not None and rules.any():
        try:
            validate_value(spec, spec.default)
        except ParameterError as exc:
            warnings.append(
                f"variable `{var.name}` ({var.file}:{var.line}): its validation could not be carried over "
                f"to the parameter ({exc.reason}); Terraform still checks it"
            )
            spec = replace(
                spec,
                options=(),
                validation_regex=None,
                validation_min=None,
                validation_max=None,
                validation_error=None,
            )
    return spec, warnings


def manifest_parameter_keys(manifest_text: str | None) -> dict[str, set[str]]:
    """The keys each ``[[parameters]]`` entry of the manifest sets (the manifest wins only where it speaks)."""
    import tomllib

    if manifest_text is None:
        return {}
    try:
        data = tomllib.loads(manifest_text)
    except tomllib.TOMLDecodeError:
        return {}
    found: dict[str, set[str]] = {}
    for entry in data.get("parameters") or []:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            found[entry["name"]] = set(entry)
    return found


def _merge(
    manifest: ParameterSpec, keys: set[str], var: TerraformVariable
) -> tuple[ParameterSpec, list[str]]:
    derived, warnings = variable_parameter(var)
    spec = manifest
    if "type" not in keys:
        spec = replace(spec, type=derived.type)
    elif var.type is not None and manifest.type is not derived.type:
        warnings.append(
            f"parameter `{manifest.name}`: prebuildd.toml says {manifest.type}, the Terraform variable "
            f"({var.file}:{var.line}) says {var.type}; the manifest's type is used"
        )
    if "description" not in keys:
        spec = replace(spec, description=derived.description)
    if "default" not in keys:
        default = derived.default
        if default is not None and spec.type is not derived.type:
            try:
                default = canonical_value(spec, default)
            except ParameterError:
                default = None
        spec = replace(spec, default=default)
        if "required" not in keys:
            spec = replace(spec, required=derived.required)
    if "validation" not in keys:
        spec = replace(
            spec,
            validation_regex=derived.validation_regex,
            validation_min=derived.validation_min,
            validation_max=derived.validation_max,
            validation_error=derived.validation_error,
        )
    if "options" not in keys:
        spec = replace(spec, options=derived.options)
    return spec, warnings


class ParameterConflict(ValueError):
    """The manifest and the configuration disagree in a way no build could satisfy."""


def merge_parameters(
    manifest_specs: Sequence[ParameterSpec],
    manifest_keys: Mapping[str, set[str]],
    variables: Sequence[TerraformVariable],
    config: TerraformConfig,
) -> tuple[tuple[ParameterSpec, ...], list[str]]:
    """The version's parameters: the manifest's first (completed from their variables), then the variables'.

    Raises ParameterConflict when a parameter's default breaks its own rules or names a workspace fact.
    """
    declared = {var.name: var for var in variables}
    warnings: list[str] = []
    specs: list[ParameterSpec] = []
    for spec in manifest_specs:
        if spec.name.startswith(TERRAFORM_FACT_PREFIX):
            raise ParameterConflict(
                f"parameter `{spec.name}`: names starting with {TERRAFORM_FACT_PREFIX} are reserved for "
                "the workspace facts prebuildd passes to Terraform; rename the parameter"
            )
        var = declared.get(spec.name)
        if var is None:
            warnings.append(
                f"parameter `{spec.name}` is declared in prebuildd.toml but the configuration declares no "
                f'variable "{spec.name}": its value does not reach Terraform'
            )
            specs.append(spec)
            continue
        merged, notes = _merge(spec, manifest_keys.get(spec.name, {"type", "default", "required"}), var)
        warnings.extend(notes)
        specs.append(merged)
    in_manifest = {spec.name for spec in manifest_specs}
    for var in variables:
        if var.name.startswith(TERRAFORM_FACT_PREFIX):
            if var.name not in FACTS:
                warnings.append(
                    f"variable `{var.name}` ({var.file}:{var.line}) is named like a workspace fact but is "
                    f"none; prebuildd passes no value for it. Facts: {', '.join(FACTS)}"
                )
            continue
        if var.name in in_manifest:
            continue
        if var.name in config.vars:
            continue
        spec, notes = variable_parameter(var)
        warnings.extend(notes)
        specs.append(spec)
    for name in config.vars:
        if name not in declared:
            warnings.append(
                f'[terraform].vars.{name}: the configuration declares no variable "{name}"; ignored'
            )
        elif name in in_manifest:
            warnings.append(f"[terraform].vars.{name} is also a parameter: the parameter's value is passed")
    for spec in specs:
        if spec.default is not None:
            try:
                validate_value(spec, spec.default)
            except ParameterError as exc:
                raise ParameterConflict(
                    f"parameter `{spec.name}`: default {spec.default!r}: {exc.reason}"
                ) from exc
    return tuple(specs), warnings


# --- values for a build ------------------------------------------------------------------------------


def agent_env_key(agent: str) -> str:
    """The environment key under which the daemon hands over an agent's token (see ``daemon.agent_env``)."""
    return f"PREBUILDD_AGENT_TOKEN_{agent.upper().replace('-', '_')}"


def fact_values(ctx: BuildContext, data_dir: Path) -> dict[str, Any]:
    tokens = {
        agent: ctx.extra_env[agent_env_key(agent)]
        for agent in ctx.manifest.agents
        if agent_env_key(agent) in ctx.extra_env
    }
    return {
        "prebuildd_workspace_id": ctx.workspace_id,
        "prebuildd_workspace_name": ctx.workspace_name,
        "prebuildd_workspace_owner": ctx.owner_name,
        "prebuildd_workspace_owner_id": ctx.owner_id,
        "prebuildd_template": ctx.template_name,
        "prebuildd_template_version_id": ctx.version_id,
        "prebuildd_transition": ctx.transition.value,
        "prebuildd_build_number": ctx.build_number,
        "prebuildd_preset": ctx.preset_name or "",
        "prebuildd_is_prebuild": ctx.is_prebuild,
        "prebuildd_is_claim": ctx.is_claim,
        "prebuildd_access_url": ctx.access_url,
        "prebuildd_data_dir": str(data_dir),
        "prebuildd_agent_token": ctx.extra_env.get("PREBUILDD_AGENT_TOKEN", ""),
        "prebuildd_agent_tokens": tokens,
    }


def build_tfvars(
    variables: Sequence[TerraformVariable],
    parameters: Mapping[str, str],
    facts: Mapping[str, Any],
    fixed: Mapping[str, Any],
) -> tuple[dict[str, Any], list[str]]:
    """Values for the declared variables, and the parameters no variable takes."""
    declared = {var.name: var for var in variables}
    values: dict[str, Any] = {name: value for name, value in fixed.items() if name in declared}
    unused: list[str] = []
    for name, value in parameters.items():
        var = declared.get(name)
        if var is None or name.startswith(TERRAFORM_FACT_PREFIX):
            unused.append(name)
            continue
        values[name] = tfvars_value(var, value)
    values.update({name: value for name, value in facts.items() if name in declared})
    return values, unused
