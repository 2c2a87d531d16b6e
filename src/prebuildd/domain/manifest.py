"""The template manifest ``prebuildd.toml``: parsing and static validation.

Every problem is a :class:`ManifestError` naming the file, the dotted key (``parameters[cpu].validation.min``,
``presets[small].prebuilds.schedule[0].cron``) and the reason.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from prebuildd.domain.autoscale import AutoscaleSettings, settings_problems
from prebuildd.domain.durations import format_duration, parse_duration
from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.domain.expression import problem as expression_problem
from prebuildd.domain.jobs import FailureClass
from prebuildd.domain.limits import (
    DESCRIPTION,
    NAME,
    PARAMETER_NAME,
    PARAMETER_VALUES_TOTAL,
    SHORT_TEXT,
    Limit,
    parameter_values_total,
)
from prebuildd.domain.parameters import (
    MONOTONIC_KINDS,
    ParameterError,
    ParameterSpec,
    ParameterType,
    canonical_value,
    format_number,
    unknown_parameter_reason,
    validate_value,
)
from prebuildd.domain.pools import check_cron, instances_problem, timezone_problem, ttl_problem
from prebuildd.domain.schedules import overlap

MANIFEST_FILE = "prebuildd.toml"
PROVISIONER_KINDS = ("echo", "exec", "terraform")

EXEC_SCRIPTS = ("create", "start", "stop", "delete", "claim")
TERRAFORM_KEYS = ("timeout", "vars", "claim_build")
"""The ``[terraform]`` keys prebuildd reads; others are kept in the raw section (the import warns about them)."""
TERRAFORM_FACT_PREFIX = "prebuildd_"
"""Terraform variables named so receive workspace facts from prebuildd; they are never parameters."""
ECHO_STEPS = ("import", "start", "stop", "delete", "claim")
ECHO_RESULTS = ("success", "failure")

MAX_INTEGER = 2**63 - 1
MIN_INTEGER = -(2**63)
"""The widest integer a manifest may hold anywhere: TOML's own 64-bit range (tomllib reads any size, and a larger
one overflows a column or a daemon's arithmetic later)."""
MAX_NESTING = 32
"""The deepest a manifest value may nest (tables and arrays); far more than a template needs, far less than
what makes a parser run out of stack."""
MAX_TIMEOUT_SECONDS = 7 * 86400
"""The longest ``exec.timeout`` or ``terraform.timeout``: a week."""
MAX_ECHO_DELAY_SECONDS = 86400
"""The longest scripted echo delay: a day."""

_PARAMETER_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_AGENT_NAME = re.compile(r"[a-z0-9_-]+")


# --- model -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleSpec:
    cron: str
    """Five fields, minute ``*``: a set of whole hours in the preset's timezone."""
    instances: int


@dataclass(frozen=True)
class PrebuildSettings:
    instances: int
    ttl_seconds: int = 0
    """0 = no TTL."""
    timezone: str = "UTC"
    schedules: tuple[ScheduleSpec, ...] = ()
    autoscale: AutoscaleSettings | None = None
    """Size the pool from demand (SPEC §5.2); ``instances`` is the fallback with too little data."""
    expression: str | None = None
    """A reference-style target expression (``domain.expression``); the scheduled target on error."""


@dataclass(frozen=True)
class PresetSpec:
    name: str
    parameters: Mapping[str, str]
    """Canonical values by parameter name."""
    prebuilds: PrebuildSettings | None = None
    description: str = ""


@dataclass(frozen=True)
class ExecConfig:
    create: str | None = None
    start: str | None = None
    stop: str | None = None
    delete: str | None = None
    claim: str | None = None
    timeout_seconds: float | None = None

    def script_for(self, transition: str, first_build: bool) -> str | None:
        """The script to run for ``transition`` (``start``/``stop``/``delete``/``claim``), or None.

        ``start`` runs ``create`` on the first build (falling back to ``start``), ``start`` afterwards.
        """
        if transition == "start":
            if first_build:
                return self.create if self.create is not None else self.start
            return self.start
        if transition == "stop":
            return self.stop
        if transition == "delete":
            return self.delete
        if transition == "claim":
            return self.claim
        raise ValueError(f"unknown transition {transition!r}: expected start, stop, delete or claim")


@dataclass(frozen=True)
class EchoStep:
    result: str = "success"
    error: str = ""
    delay_seconds: float = 0.0
    logs: tuple[str, ...] = ()
    outputs: Mapping[str, Any] = field(default_factory=dict)
    failure_class: FailureClass = FailureClass.BUILD
    block: bool = False


@dataclass(frozen=True)
class EchoConfig:
    steps: Mapping[str, EchoStep] = field(default_factory=dict)

    def step(self, name: str) -> EchoStep:
        """The scripted step ``name``; an unscripted step succeeds at once."""
        return self.steps.get(name) or EchoStep()


@dataclass(frozen=True)
class TerraformConfig:
    """The typed view of a manifest's ``[terraform]`` section (see :func:`terraform_config`)."""

    timeout_seconds: float | None = None
    """Limit for one build or import job (init, apply and outputs together); None = the provisioner's default."""
    vars: Mapping[str, Any] = field(default_factory=dict)
    """Fixed values for Terraform variables that are not parameters (passed when the configuration declares them)."""
    claim_build: bool = False
    """Re-apply as the new owner when a prebuild is claimed (a claim build), even with no values given at claim."""
    unknown_keys: tuple[str, ...] = ()
    """Keys of the section prebuildd does not read."""


@dataclass(frozen=True)
class TemplateManifest:
    provisioner: str
    display_name: str = ""
    description: str = ""
    parameters: tuple[ParameterSpec, ...] = ()
    presets: tuple[PresetSpec, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    agents: tuple[str, ...] = ()
    exec: ExecConfig | None = None
    echo: EchoConfig | None = None
    terraform: Mapping[str, Any] | None = None
    """The raw ``[terraform]`` table; :func:`terraform_config` reads it."""


class ManifestError(PrebuilddError, ValueError):
    """The manifest is invalid: ``file``, dotted ``key`` (may be empty) and ``reason``."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        message = f"{file}: {key}: {reason}" if key else f"{file}: {reason}"
        super().__init__(ErrorCode.INVALID_MANIFEST, message, {"file": file, "key": key, "reason": reason})
        self.file = file
        self.key = key
        self.reason = reason


# --- typed access to the decoded TOML --------------------------------------------------------------


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"{type(value).__name__} {value!s}"


def _join(key: str, child: str) -> str:
    return f"{key}.{child}" if key else child


class _Reader:
    """Reads one file's tables with key paths, raising :class:`ManifestError` on any mismatch."""

    def __init__(self, file: str) -> None:
        self.file = file

    def error(self, key: str, reason: str) -> ManifestError:
        return ManifestError(self.file, key, reason)

    def wrong_type(self, key: str, expected: str, value: object) -> ManifestError:
        return self.error(key, f"expected {expected}, got {_describe(value)}")

    def check_keys(self, table: Mapping[str, Any], key: str, allowed: Sequence[str]) -> None:
        for name in table:
            if name not in allowed:
                raise self.error(
                    _join(key, name), f"unknown key `{name}`; allowed keys: {', '.join(allowed)}"
                )

    def table(self, value: object, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.wrong_type(key, "a table", value)
        return value

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str):
            raise self.wrong_type(key, "a string", value)
        return value

    def text(self, value: object, key: str, limit: Limit) -> str:
        """A string within ``limit`` (names, descriptions: ``domain.limits``)."""
        text = self.string(value, key)
        if (reason := limit.check(text)) is not None:
            raise self.error(key, f"too long: {reason}")
        return text

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.wrong_type(key, "a boolean", value)
        return value

    def integer(self, value: object, key: str, *, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.wrong_type(key, "an integer", value)
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value}")
        return value

    def number(self, value: object, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.wrong_type(key, "a number", value)
        if isinstance(value, int) and not MIN_INTEGER <= value <= MAX_INTEGER:
            raise self.error(key, _integer_range_reason(value))
        if not math.isfinite(value):
            raise self.error(key, f"must be a finite number, got {value}")
        return float(value)

    def array(self, value: object, key: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.wrong_type(key, "an array", value)
        return value

    def strings(self, value: object, key: str) -> list[str]:
        items = self.array(value, key)
        return [self.string(item, f"{key}[{i}]") for i, item in enumerate(items)]

    def duration(self, value: object, key: str, *, maximum: float | None = None) -> float:
        """A duration string (``30s``, ``1h30m``) or a number of seconds, finite and at most ``maximum``."""
        if isinstance(value, str):
            try:
                seconds = parse_duration(value)
            except ValueError as exc:
                raise self.error(key, str(exc)) from exc
            if not math.isfinite(seconds):
                raise self.error(key, f"must be a finite duration, got {value!r}")
        else:
            seconds = self.number(value, key)
        if seconds < 0:
            raise self.error(key, f"duration must not be negative, got {format_number(seconds)}")
        if maximum is not None and seconds > maximum:
            raise self.error(
                key, f"must be at most {format_duration(maximum)}, got {format_duration(seconds)}"
            )
        return seconds

    def relative_path(self, value: object, key: str) -> str:
        path = self.string(value, key)
        if not path.strip():
            raise self.error(key, "must not be empty")
        if path.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", path):
            raise self.error(key, f"must be a path relative to the template directory, got {path!r}")
        if ".." in re.split(r"[/\\]", path):
            raise self.error(key, f"must not leave the template directory ('..'), got {path!r}")
        return path


# --- sections --------------------------------------------------------------------------------------

_TOP_KEYS = (
    "provisioner",
    "display_name",
    "description",
    "tags",
    "agents",
    "exec",
    "echo",
    "terraform",
    "parameters",
    "presets",
)
_EXEC_KEYS = (*EXEC_SCRIPTS, "timeout")
_ECHO_STEP_KEYS = ("result", "error", "delay", "logs", "outputs", "failure_class", "block")
_PARAMETER_KEYS = (
    "name",
    "type",
    "required",
    "default",
    "mutable",
    "options",
    "description",
    "display_name",
    "validation",
)
_VALIDATION_KEYS = ("regex", "min", "max", "monotonic", "error")
_PRESET_KEYS = ("name", "description", "parameters", "prebuilds")
_PREBUILDS_KEYS = ("instances", "ttl", "timezone", "schedule", "autoscale", "expression")
_AUTOSCALE_KEYS = ("min", "max", "target_hit_rate", "stabilization", "lead_time")
_SCHEDULE_KEYS = ("cron", "instances")


def _parse_exec(r: _Reader, value: object) -> ExecConfig:
    table = r.table(value, "exec")
    r.check_keys(table, "exec", _EXEC_KEYS)
    scripts = {name: r.relative_path(table[name], f"exec.{name}") for name in EXEC_SCRIPTS if name in table}
    if "create" not in scripts and "start" not in scripts:
        raise r.error("exec", "needs at least one of `create` or `start`")
    timeout: float | None = None
    if "timeout" in table:
        timeout = r.duration(table["timeout"], "exec.timeout", maximum=MAX_TIMEOUT_SECONDS)
        if timeout <= 0:
            raise r.error("exec.timeout", "must be greater than zero")
    return ExecConfig(
        create=scripts.get("create"),
        start=scripts.get("start"),
        stop=scripts.get("stop"),
        delete=scripts.get("delete"),
        claim=scripts.get("claim"),
        timeout_seconds=timeout,
    )


_TERRAFORM_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _parse_terraform(r: _Reader, table: Mapping[str, Any]) -> TerraformConfig:
    timeout: float | None = None
    if "timeout" in table:
        timeout = r.duration(table["timeout"], "terraform.timeout", maximum=MAX_TIMEOUT_SECONDS)
        if timeout <= 0:
            raise r.error("terraform.timeout", "must be greater than zero")
    variables: dict[str, Any] = {}
    if "vars" in table:
        for name, value in r.table(table["vars"], "terraform.vars").items():
            if not _TERRAFORM_VAR_NAME.fullmatch(name):
                raise r.error(f"terraform.vars.{name}", f"invalid Terraform variable name {name!r}")
            if name.startswith(TERRAFORM_FACT_PREFIX):
                raise r.error(
                    f"terraform.vars.{name}",
                    f"variables named {TERRAFORM_FACT_PREFIX}* receive workspace facts from prebuildd "
                    "and cannot be set here",
                )
            variables[name] = value
    claim_build = (
        r.boolean(table["claim_build"], "terraform.claim_build") if "claim_build" in table else False
    )
    unknown = tuple(name for name in table if name not in TERRAFORM_KEYS)
    return TerraformConfig(
        timeout_seconds=timeout, vars=variables, claim_build=claim_build, unknown_keys=unknown
    )


def terraform_config(manifest: TemplateManifest, file: str = MANIFEST_FILE) -> TerraformConfig:
    """The typed ``[terraform]`` section of ``manifest`` (defaults when it has none); raises ManifestError."""
    return _parse_terraform(_Reader(file), manifest.terraform or {})


def _parse_echo_step(r: _Reader, value: object, key: str) -> EchoStep:
    table = r.table(value, key)
    r.check_keys(table, key, _ECHO_STEP_KEYS)
    result = "success"
    if "result" in table:
        result = r.string(table["result"], f"{key}.result")
        if result not in ECHO_RESULTS:
            raise r.error(f"{key}.result", f"unknown result {result!r}; expected one of: success, failure")
    failure_class = FailureClass.BUILD
    if "failure_class" in table:
        text = r.string(table["failure_class"], f"{key}.failure_class")
        try:
            failure_class = FailureClass(text)
        except ValueError:
            allowed = ", ".join(kind.value for kind in FailureClass)
            raise r.error(
                f"{key}.failure_class", f"unknown failure class {text!r}; expected one of: {allowed}"
            ) from None
    return EchoStep(
        result=result,
        error=r.string(table["error"], f"{key}.error") if "error" in table else "",
        delay_seconds=r.duration(table["delay"], f"{key}.delay", maximum=MAX_ECHO_DELAY_SECONDS)
        if "delay" in table
        else 0.0,
        logs=tuple(r.strings(table["logs"], f"{key}.logs")) if "logs" in table else (),
        outputs=dict(r.table(table["outputs"], f"{key}.outputs")) if "outputs" in table else {},
        failure_class=failure_class,
        block=r.boolean(table["block"], f"{key}.block") if "block" in table else False,
    )


def _parse_echo(r: _Reader, value: object) -> EchoConfig:
    table = r.table(value, "echo")
    r.check_keys(table, "echo", ECHO_STEPS)
    return EchoConfig(
        steps={name: _parse_echo_step(r, table[name], f"echo.{name}") for name in ECHO_STEPS if name in table}
    )


def _parse_tags(r: _Reader, value: object) -> dict[str, str]:
    table = r.table(value, "tags")
    tags: dict[str, str] = {}
    for name, tag in table.items():
        if not name:
            raise r.error("tags", "tag names must not be empty")
        tags[name] = r.string(tag, f"tags.{name}")
    return tags


def _parse_agents(r: _Reader, value: object) -> tuple[str, ...]:
    names = r.strings(value, "agents")
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not _AGENT_NAME.fullmatch(name):
            raise r.error(
                f"agents[{i}]", f"invalid agent name {name!r}: use lowercase letters, digits, '-' and '_'"
            )
        if name in seen:
            raise r.error(f"agents[{i}]", f"duplicate agent name {name!r}")
        seen.add(name)
    return tuple(names)


def _parse_validation(
    r: _Reader, value: object, key: str, kind: ParameterType
) -> tuple[str | None, float | None, float | None, str | None, str | None]:
    table = r.table(value, key)
    r.check_keys(table, key, _VALIDATION_KEYS)
    regex: str | None = None
    if "regex" in table:
        regex = r.string(table["regex"], f"{key}.regex")
        try:
            re.compile(regex)
        except re.error as exc:
            raise r.error(f"{key}.regex", f"invalid regular expression {regex!r}: {exc}") from exc
    bounds: dict[str, float] = {}
    for bound in ("min", "max"):
        if bound in table:
            bounds[bound] = r.number(table[bound], f"{key}.{bound}")
            if kind is not ParameterType.NUMBER:
                raise r.error(f"{key}.{bound}", f"only allowed for number parameters (this one is {kind})")
    if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
        raise r.error(
            f"{key}.min",
            f"min ({format_number(bounds['min'])}) is greater than max ({format_number(bounds['max'])})",
        )
    monotonic: str | None = None
    if "monotonic" in table:
        monotonic = r.string(table["monotonic"], f"{key}.monotonic")
        if monotonic not in MONOTONIC_KINDS:
            raise r.error(
                f"{key}.monotonic",
                f"unknown value {monotonic!r}; expected one of: {', '.join(MONOTONIC_KINDS)}",
            )
        if kind is not ParameterType.NUMBER:
            raise r.error(f"{key}.monotonic", f"only allowed for number parameters (this one is {kind})")
    error = r.string(table["error"], f"{key}.error") if "error" in table else None
    return regex, bounds.get("min"), bounds.get("max"), monotonic, error


def _canonical(r: _Reader, spec: ParameterSpec, raw: object, key: str) -> str:
    try:
        return canonical_value(spec, raw)
    except ParameterError as exc:
        raise r.error(key, exc.reason) from exc


def _validate(r: _Reader, spec: ParameterSpec, value: str, key: str) -> None:
    try:
        validate_value(spec, value)
    except ParameterError as exc:
        raise r.error(key, exc.reason) from exc


def _parse_parameter(r: _Reader, value: object, index: int, seen: Mapping[str, int]) -> ParameterSpec:
    key = f"parameters[{index}]"
    table = r.table(value, key)
    if "name" not in table:
        raise r.error(f"{key}.name", "is required")
    name = r.text(table["name"], f"{key}.name", PARAMETER_NAME)
    if not _PARAMETER_NAME.fullmatch(name):
        raise r.error(
            f"{key}.name",
            f"invalid parameter name {name!r}: must match ^[a-z_][a-z0-9_]*$",
        )
    if name in seen:
        raise r.error(
            f"{key}.name", f"duplicate parameter `{name}` (also declared at parameters[{seen[name]}])"
        )
    key = f"parameters[{name}]"
    r.check_keys(table, key, _PARAMETER_KEYS)

    kind = ParameterType.STRING
    if "type" in table:
        text = r.string(table["type"], f"{key}.type")
        try:
            kind = ParameterType(text)
        except ValueError:
            allowed = ", ".join(t.value for t in ParameterType)
            raise r.error(f"{key}.type", f"unknown type {text!r}; expected one of: {allowed}") from None

    regex: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    monotonic: str | None = None
    error: str | None = None
    if "validation" in table:
        regex, minimum, maximum, monotonic, error = _parse_validation(
            r, table["validation"], f"{key}.validation", kind
        )
    spec = ParameterSpec(
        name=name,
        type=kind,
        mutable=r.boolean(table["mutable"], f"{key}.mutable") if "mutable" in table else True,
        validation_regex=regex,
        validation_min=minimum,
        validation_max=maximum,
        validation_monotonic=monotonic,
        validation_error=error,
        description=r.text(table["description"], f"{key}.description", DESCRIPTION)
        if "description" in table
        else "",
        display_name=r.text(table["display_name"], f"{key}.display_name", SHORT_TEXT)
        if "display_name" in table
        else "",
    )

    # Options: for list(string) they are the allowed elements, so they are strings.
    options: list[str] = []
    if "options" in table:
        element_spec = ParameterSpec(name=name) if kind is ParameterType.LIST_STRING else spec
        for i, raw in enumerate(r.array(table["options"], f"{key}.options")):
            option_key = f"{key}.options[{i}]"
            option = _canonical(r, element_spec, raw, option_key)
            if option in options:
                raise r.error(option_key, f"duplicate option {option!r}")
            if kind is ParameterType.LIST_STRING:
                _validate(r, spec, canonical_value(spec, [option]), option_key)
            else:
                _validate(r, spec, option, option_key)
            options.append(option)
    spec = replace(spec, options=tuple(options))

    default: str | None = None
    if "default" in table:
        default = _canonical(r, spec, table["default"], f"{key}.default")
        _validate(r, spec, default, f"{key}.default")
    required = default is None
    if "required" in table:
        required = r.boolean(table["required"], f"{key}.required")
        if required and default is not None:
            raise r.error(f"{key}.required", "a parameter with a default cannot be required")
    return replace(spec, default=default, required=required)


def _parse_cron(r: _Reader, value: object, key: str) -> str:
    cron = r.string(value, key)
    problem = check_cron(cron)
    if problem is not None:
        raise r.error(key, problem.reason)
    return cron


def _pool_integer(r: _Reader, value: object, key: str) -> int:
    """A number of instances: an integer, checked by the pool validator."""
    instances = r.integer(value, key)
    problem = instances_problem(instances)
    if problem is not None:
        raise r.error(key, problem)
    return instances


def _parse_prebuilds(r: _Reader, value: object, key: str) -> PrebuildSettings:
    table = r.table(value, key)
    r.check_keys(table, key, _PREBUILDS_KEYS)
    if "instances" not in table:
        raise r.error(f"{key}.instances", "is required")
    instances = _pool_integer(r, table["instances"], f"{key}.instances")

    ttl = 0
    if "ttl" in table:
        seconds = r.duration(table["ttl"], f"{key}.ttl")
        problem = ttl_problem(seconds)
        if problem is not None:
            raise r.error(f"{key}.ttl", problem)
        ttl = int(seconds)

    timezone = "UTC"
    if "timezone" in table:
        timezone = r.string(table["timezone"], f"{key}.timezone")
        problem = timezone_problem(timezone)
        if problem is not None:
            raise r.error(f"{key}.timezone", problem)

    schedules: list[ScheduleSpec] = []
    if "schedule" in table:
        for i, item in enumerate(r.array(table["schedule"], f"{key}.schedule")):
            item_key = f"{key}.schedule[{i}]"
            entry = r.table(item, item_key)
            r.check_keys(entry, item_key, _SCHEDULE_KEYS)
            for required in _SCHEDULE_KEYS:
                if required not in entry:
                    raise r.error(f"{item_key}.{required}", "is required")
            schedules.append(
                ScheduleSpec(
                    cron=_parse_cron(r, entry["cron"], f"{item_key}.cron"),
                    instances=_pool_integer(r, entry["instances"], f"{item_key}.instances"),
                )
            )
    autoscale = _parse_autoscale(r, table["autoscale"], f"{key}.autoscale") if "autoscale" in table else None
    target_expression = None
    if "expression" in table:
        target_expression = r.string(table["expression"], f"{key}.expression")
        problem = expression_problem(target_expression)
        if problem is not None:
            raise r.error(f"{key}.expression", problem)
        if autoscale is not None:
            raise r.error(f"{key}.expression", "a pool has autoscale or an expression, not both")
    return PrebuildSettings(
        instances=instances,
        ttl_seconds=ttl,
        timezone=timezone,
        schedules=tuple(schedules),
        autoscale=autoscale,
        expression=target_expression,
    )


def _parse_autoscale(r: _Reader, value: object, key: str) -> AutoscaleSettings:
    table = r.table(value, key)
    r.check_keys(table, key, _AUTOSCALE_KEYS)
    base = AutoscaleSettings()
    stabilization = float(base.stabilization_seconds)
    if "stabilization" in table:
        stabilization = r.duration(table["stabilization"], f"{key}.stabilization", maximum=24 * 3600)
    settings = AutoscaleSettings(
        min=r.integer(table["min"], f"{key}.min") if "min" in table else base.min,
        max=r.integer(table["max"], f"{key}.max") if "max" in table else base.max,
        target_hit_rate=(
            r.number(table["target_hit_rate"], f"{key}.target_hit_rate")
            if "target_hit_rate" in table
            else base.target_hit_rate
        ),
        stabilization_seconds=int(stabilization),
        lead_time=r.string(table["lead_time"], f"{key}.lead_time")
        if "lead_time" in table
        else base.lead_time,
    )
    for sub, reason in settings_problems(settings):
        raise r.error(f"{key}.{sub}", reason)
    return settings


def _loose_canonical(raw: object) -> str:
    """The canonical string a value would have under the type it looks like (for a parameter declared later)."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        return format_number(raw)
    return json.dumps(raw, separators=(",", ":"), ensure_ascii=False, default=str)


def _parse_preset(
    r: _Reader,
    value: object,
    index: int,
    specs: Mapping[str, ParameterSpec],
    seen: Mapping[str, int],
    *,
    defer_unknown: bool = False,
) -> PresetSpec:
    """``defer_unknown``: keep values of parameters the manifest does not declare (Terraform variables that the
    import declares); :func:`check_presets` checks them against the imported parameters."""
    key = f"presets[{index}]"
    table = r.table(value, key)
    if "name" not in table:
        raise r.error(f"{key}.name", "is required")
    name = r.text(table["name"], f"{key}.name", NAME)
    if not name.strip():
        raise r.error(f"{key}.name", "must not be empty")
    if name in seen:
        raise r.error(f"{key}.name", f"duplicate preset `{name}` (also declared at presets[{seen[name]}])")
    key = f"presets[{name}]"
    r.check_keys(table, key, _PRESET_KEYS)

    values: dict[str, str] = {}
    if "parameters" in table:
        for parameter, raw in r.table(table["parameters"], f"{key}.parameters").items():
            value_key = f"{key}.parameters.{parameter}"
            spec = specs.get(parameter)
            if spec is None and defer_unknown:
                values[parameter] = _loose_canonical(raw)
                continue
            if spec is None:
                raise r.error(value_key, unknown_parameter_reason(tuple(specs.values())))
            values[parameter] = _canonical(r, spec, raw, value_key)
        if (reason := PARAMETER_VALUES_TOTAL.exceeded(parameter_values_total(values))) is not None:
            raise r.error(f"{key}.parameters", f"the values are too large together: {reason}")
    return PresetSpec(
        name=name,
        parameters=values,
        prebuilds=_parse_prebuilds(r, table["prebuilds"], f"{key}.prebuilds")
        if "prebuilds" in table
        else None,
        description=r.text(table["description"], f"{key}.description", DESCRIPTION)
        if "description" in table
        else "",
    )


# --- every value: integer range, finiteness, depth -------------------------------------------------


def _integer_range_reason(value: int) -> str:
    # str() of an integer of more than 4300 digits raises, so a long one is shown by its size.
    shown = str(value) if abs(value) < 10**30 else f"an integer of {value.bit_length()} bits"
    return f"integer out of range: {MIN_INTEGER} to {MAX_INTEGER} (TOML integers are 64-bit), got {shown}"


def _item_label(item: object, index: int) -> str:
    """``presets[small]`` for an array of named tables, as the rest of the reader names them; else the index."""
    if isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"]:
        return str(item["name"])
    return str(index)


def _check_values(r: _Reader, data: Mapping[str, Any]) -> None:
    """Refuse, naming the key, any integer beyond 64 bits, any inf or nan, and any value nested deeper than
    :data:`MAX_NESTING`, wherever it is (free tables such as echo outputs and Terraform vars included): they
    would overflow a column, fail in JSON or exhaust a stack later, in the import or a daemon."""
    stack: list[tuple[str, object, int]] = [("", data, 0)]
    while stack:
        key, value, depth = stack.pop()
        if depth > MAX_NESTING:
            raise r.error(key, f"nested more than {MAX_NESTING} levels deep")
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if not MIN_INTEGER <= value <= MAX_INTEGER:
                raise r.error(key, _integer_range_reason(value))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise r.error(key, f"must be a finite number, got {value}")
        elif isinstance(value, dict):
            children = [(_join(key, str(name)), child) for name, child in value.items()]
            stack.extend((k, v, depth + 1) for k, v in reversed(children))
        elif isinstance(value, list):
            items = [(f"{key}[{_item_label(item, i)}]", item) for i, item in enumerate(value)]
            stack.extend((k, v, depth + 1) for k, v in reversed(items))


_TABLE_HEADER = re.compile(r"^\s*\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY_LINE = re.compile(r"^\s*([A-Za-z0-9_.\-\"' ]+?)\s*=")


def _line_of(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    return f"line {line}: "


def _key_at(text: str, offset: int) -> str:
    """The dotted key whose value holds ``offset``: the last ``key =`` before it under the last table header
    (used only when the TOML parser itself gave up, so there is no decoded document to name it from)."""
    header, key = "", ""
    for line in text[:offset].splitlines():
        if match := _TABLE_HEADER.match(line):
            header, key = match.group(1).replace(" ", ""), ""
        elif match := _KEY_LINE.match(line):
            key = match.group(1).strip().replace('"', "").replace("'", "")
    return _join(header, key) if key else header


def _too_deep_offset(text: str) -> int:
    """Where brackets first nest deeper than :data:`MAX_NESTING` (strings and comments skipped)."""
    depth, i, quote = 0, 0, ""
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and quote == '"':
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return i
        elif ch in "]}":
            depth = max(depth - 1, 0)
        i += 1
    return 0


# --- entry points ----------------------------------------------------------------------------------


def check_presets(
    parameters: Sequence[ParameterSpec], presets: Sequence[PresetSpec], file: str = MANIFEST_FILE
) -> None:
    """Validate preset values against ``parameters`` (maybe not the list the presets were parsed with).

    Raises :class:`ManifestError` keyed ``presets[<name>].parameters.<parameter>`` for an unknown name,
    a value of the wrong type or one that violates the declaration, and ``presets[<name>]`` for a
    duplicate name.
    """
    r = _Reader(file)
    specs = {spec.name: spec for spec in parameters}
    seen: set[str] = set()
    for preset in presets:
        key = f"presets[{preset.name}]"
        if preset.name in seen:
            raise r.error(key, f"duplicate preset `{preset.name}`")
        seen.add(preset.name)
        for name, value in preset.parameters.items():
            value_key = f"{key}.parameters.{name}"
            spec = specs.get(name)
            if spec is None:
                raise r.error(value_key, unknown_parameter_reason(parameters))
            _validate(r, spec, _canonical(r, spec, value, value_key), value_key)


def parse_manifest(text: str, file: str = MANIFEST_FILE) -> TemplateManifest:
    """Parse and statically validate a ``prebuildd.toml``; raises :class:`ManifestError`."""
    r = _Reader(file)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise r.error("", f"invalid TOML: {exc}") from exc
    except RecursionError:
        offset = _too_deep_offset(text)
        raise r.error(
            _key_at(text, offset), f"{_line_of(text, offset)}nested more than {MAX_NESTING} levels deep"
        ) from None
    except ValueError:  # tomllib turns digits into int() without a limit; Python refuses beyond 4300 digits
        found = re.search(r"[0-9][0-9_]{100,}", text)
        offset = found.start() if found else 0
        raise r.error(
            _key_at(text, offset),
            f"{_line_of(text, offset)}integer out of range: {MIN_INTEGER} to {MAX_INTEGER} "
            "(TOML integers are 64-bit)",
        ) from None
    _check_values(r, data)
    r.check_keys(data, "", _TOP_KEYS)

    if "provisioner" not in data:
        raise r.error("provisioner", f"is required; expected one of: {', '.join(PROVISIONER_KINDS)}")
    provisioner = r.string(data["provisioner"], "provisioner")
    if provisioner not in PROVISIONER_KINDS:
        raise r.error(
            "provisioner",
            f"unknown provisioner {provisioner!r}; expected one of: {', '.join(PROVISIONER_KINDS)}",
        )
    for section in ("exec", "echo", "terraform"):
        if section in data and section != provisioner:
            raise r.error(
                section,
                f'section only allowed when provisioner = "{section}" (provisioner is "{provisioner}")',
            )

    exec_config: ExecConfig | None = None
    echo_config: EchoConfig | None = None
    terraform_section: dict[str, Any] | None = None
    if provisioner == "exec":
        if "exec" not in data:
            raise r.error("exec", 'section is required when provisioner = "exec"')
        exec_config = _parse_exec(r, data["exec"])
    elif provisioner == "echo":
        echo_config = _parse_echo(r, data["echo"]) if "echo" in data else EchoConfig()
    else:
        terraform_section = dict(r.table(data["terraform"], "terraform")) if "terraform" in data else {}
        _parse_terraform(r, terraform_section)

    parameters: list[ParameterSpec] = []
    parameter_index: dict[str, int] = {}
    if "parameters" in data:
        for i, item in enumerate(r.array(data["parameters"], "parameters")):
            spec = _parse_parameter(r, item, i, parameter_index)
            parameter_index[spec.name] = i
            parameters.append(spec)

    specs = {spec.name: spec for spec in parameters}
    presets: list[PresetSpec] = []
    preset_index: dict[str, int] = {}
    if "presets" in data:
        for i, item in enumerate(r.array(data["presets"], "presets")):
            preset = _parse_preset(r, item, i, specs, preset_index, defer_unknown=provisioner == "terraform")
            preset_index[preset.name] = i
            presets.append(preset)
    if provisioner == "terraform":
        # A Terraform version's other parameters are its variables, known after its import, which checks
        # the presets again then; here only the values of parameters the manifest declares.
        checked = [
            replace(p, parameters={k: v for k, v in p.parameters.items() if k in specs}) for p in presets
        ]
        check_presets(parameters, checked, file)
    else:
        check_presets(parameters, presets, file)

    return TemplateManifest(
        provisioner=provisioner,
        display_name=r.text(data["display_name"], "display_name", SHORT_TEXT)
        if "display_name" in data
        else "",
        description=r.text(data["description"], "description", DESCRIPTION) if "description" in data else "",
        parameters=tuple(parameters),
        presets=tuple(presets),
        tags=_parse_tags(r, data["tags"]) if "tags" in data else {},
        agents=_parse_agents(r, data["agents"]) if "agents" in data else (),
        exec=exec_config,
        echo=echo_config,
        terraform=terraform_section,
    )


def preset_warnings(manifest: TemplateManifest) -> list[str]:
    """Warnings shown on push: presets with prebuilds that leave a required parameter unset, or whose schedules
    overlap (the pool then keeps its ``instances``)."""
    warnings: list[str] = []
    for preset in manifest.presets:
        if preset.prebuilds is None:
            continue
        overlapping = overlap([s.cron for s in preset.prebuilds.schedules])
        if overlapping is not None:
            warnings.append(f"preset `{preset.name}`: {overlapping}")
        for spec in manifest.parameters:
            if spec.required and spec.default is None and spec.name not in preset.parameters:
                warnings.append(
                    f"preset `{preset.name}` has prebuilds but leaves required parameter "
                    f"`{spec.name}` unset: its prebuilds will fail until a value is set"
                )
    return warnings
