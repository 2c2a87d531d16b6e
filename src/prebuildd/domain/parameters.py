"""Template parameters: declarations, canonical values, validation and resolution for a build.

Every parameter value is kept as a **canonical string**: numbers as ``"3"`` or ``"3.5"``, bools as
``"true"``/``"false"``, ``list(string)`` as a compact JSON array (``'["a","b"]'``), strings as themselves.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from prebuildd.domain.limits import PARAMETER_VALUE, PARAMETER_VALUES_TOTAL, parameter_values_total


class ParameterType(StrEnum):
    STRING = "string"
    NUMBER = "number"
    BOOL = "bool"
    LIST_STRING = "list(string)"


MONOTONIC_KINDS = ("increasing", "decreasing")

MAX_NUMBER = 1.7976931348623157e308
"""The largest magnitude of a number parameter: a 64-bit float's (what Terraform, JSON clients and the
comparisons here can all hold). Beyond it a value is refused, not rounded to infinity."""

_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER_TEXT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class ParameterSpec:
    """One declared input of a template version."""

    name: str
    type: ParameterType = ParameterType.STRING
    required: bool = False
    default: str | None = None
    """Canonical string form, or None when the parameter has no default."""
    mutable: bool = True
    options: tuple[str, ...] = ()
    """Canonical strings. For ``list(string)`` these are the allowed *elements*."""
    validation_regex: str | None = None
    validation_min: float | None = None
    validation_max: float | None = None
    validation_monotonic: str | None = None
    """``"increasing"``, ``"decreasing"`` or None (numbers only)."""
    validation_error: str | None = None
    """Custom message appended when the regex, min or max check fails."""
    description: str = ""
    display_name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type.value,
            "required": self.required,
            "default": self.default,
            "mutable": self.mutable,
            "options": list(self.options),
            "validation_regex": self.validation_regex,
            "validation_min": self.validation_min,
            "validation_max": self.validation_max,
            "validation_monotonic": self.validation_monotonic,
            "validation_error": self.validation_error,
            "description": self.description,
            "display_name": self.display_name,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ParameterSpec:
        """The inverse of :meth:`to_json`; keys that are absent take their defaults."""

        def opt_float(key: str) -> float | None:
            value = d.get(key)
            if value is None:
                return None
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):  # JSON has no inf: it could not be stored, nor compared sensibly
                raise ValueError(f"{key}: must be a finite number, got {_preview(value)}")
            return number

        def opt_str(key: str) -> str | None:
            value = d.get(key)
            return None if value is None else str(value)

        spec = cls(
            name=str(d["name"]),
            type=ParameterType(d.get("type", ParameterType.STRING.value)),
            required=bool(d.get("required", False)),
            default=opt_str("default"),
            mutable=bool(d.get("mutable", True)),
            options=tuple(str(option) for option in d.get("options") or ()),
            validation_regex=opt_str("validation_regex"),
            validation_min=opt_float("validation_min"),
            validation_max=opt_float("validation_max"),
            validation_monotonic=opt_str("validation_monotonic"),
            validation_error=opt_str("validation_error"),
            description=str(d.get("description") or ""),
            display_name=str(d.get("display_name") or ""),
        )
        if spec.default is not None and spec.type is ParameterType.NUMBER:
            canonical_value(spec, spec.default)  # a ParameterError (a ValueError) naming the parameter
        return spec


class ParameterError(ValueError):
    """A parameter value is missing, of the wrong type or violates its declaration."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"parameter `{parameter}`: {reason}")
        self.parameter = parameter
        self.reason = reason


# --- canonical forms -------------------------------------------------------------------------------


def format_number(value: float) -> str:
    """``3.0`` -> ``"3"``, ``3.5`` -> ``"3.5"``."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer():
        return str(int(value))
    return repr(value)


class _OutOfRange(ValueError):
    pass


def _number_from_text(text: str) -> str | None:
    """The canonical form of a number written as text; None when it is not one, _OutOfRange when it is one
    too large for a float (``float`` reads any length; ``int`` refuses more than 4300 digits)."""
    text = text.strip()
    if not _NUMBER_TEXT.fullmatch(text):
        return None
    number = float(text)
    if not math.isfinite(number):
        raise _OutOfRange(text)
    if _INTEGER_TEXT.fullmatch(text):
        sign = "-" if text.startswith("-") else ""
        return str(int(sign + (text.lstrip("+-").lstrip("0") or "0")))
    return format_number(number)


def _preview(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else f"{text[:30]}… ({len(text)} characters)"


def _out_of_range(spec: ParameterSpec, raw: object) -> ParameterError:
    return ParameterError(
        spec.name, f"number out of range: at most ±{MAX_NUMBER:.4g} (a 64-bit float), got {_preview(raw)}"
    )


def _number_value(value: str) -> float | None:
    try:
        canonical = _number_from_text(value)
    except _OutOfRange:
        return None
    return None if canonical is None else float(canonical)


def _list_from_text(text: str) -> list[str] | None:
    try:
        decoded = json.loads(text)
    except ValueError:
        return None
    if isinstance(decoded, list) and all(isinstance(item, str) for item in decoded):
        return decoded
    return None


def _dump_list(items: Sequence[str]) -> str:
    return json.dumps(list(items), separators=(",", ":"), ensure_ascii=False)


def list_elements(value: str) -> list[str]:
    """The elements of a canonical ``list(string)`` value."""
    items = _list_from_text(value)
    if items is None:
        raise ValueError(f"not a JSON array of strings: {value!r}")
    return items


def canonical_value(spec: ParameterSpec, raw: object) -> str:
    """Turn a TOML, JSON or CLI value into the canonical string of ``spec``'s type; a value larger than
    ``limits.PARAMETER_VALUE`` is refused, whatever its type."""
    value = _canonical_value(spec, raw)
    if (reason := PARAMETER_VALUE.check(value)) is not None:
        raise ParameterError(spec.name, f"value too large: {reason}")
    return value


def check_values_total(values: Mapping[str, str]) -> None:
    """Refuse a build's values that are too large together (``limits.PARAMETER_VALUES_TOTAL``)."""
    if (reason := PARAMETER_VALUES_TOTAL.exceeded(parameter_values_total(dict(values)))) is not None:
        largest = max(values, key=lambda name: len(values[name]))
        raise ParameterError(largest, f"the values are too large together: {reason} (this is the largest)")


def _canonical_value(spec: ParameterSpec, raw: object) -> str:
    kind = spec.type
    if kind is ParameterType.NUMBER:
        if isinstance(raw, bool):
            pass
        elif isinstance(raw, int):
            if abs(raw) > MAX_NUMBER:
                raise _out_of_range(spec, f"an integer of {raw.bit_length()} bits")
            return str(raw)
        elif isinstance(raw, float):
            if math.isfinite(raw):
                return format_number(raw)
        elif isinstance(raw, str):
            try:
                canonical = _number_from_text(raw)
            except _OutOfRange:
                raise _out_of_range(spec, raw) from None
            if canonical is not None:
                return canonical
        raise ParameterError(spec.name, f"expected a number, got {_preview(raw)}")
    if kind is ParameterType.BOOL:
        if isinstance(raw, bool):
            return "true" if raw else "false"
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
            return raw.strip().lower()
        raise ParameterError(spec.name, f"expected a bool (true or false), got {raw!r}")
    if kind is ParameterType.LIST_STRING:
        if isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw):
            return _dump_list(raw)
        if isinstance(raw, str):
            items = _list_from_text(raw)
            if items is not None:
                return _dump_list(items)
        raise ParameterError(spec.name, f"expected a list of strings (a JSON array of strings), got {raw!r}")
    if isinstance(raw, str):
        return raw
    raise ParameterError(spec.name, f"expected a string, got {raw!r}")


# --- validation ------------------------------------------------------------------------------------


def _with_custom_error(spec: ParameterSpec, reason: str) -> str:
    return f"{reason}: {spec.validation_error}" if spec.validation_error else reason


def _options_text(options: Sequence[str]) -> str:
    return ", ".join(options)


def validate_value(spec: ParameterSpec, value: str, previous: str | None = None) -> None:
    """Check a canonical value against the declaration; ``previous`` is the last build's value (monotonic).

    Rules: the type; options (for ``list(string)``: every element); the regex with full-match semantics
    (for ``list(string)``: every element); min/max and monotonic for numbers.
    """
    canonical_value(spec, value)  # type check; raises with the expected type
    elements = list_elements(value) if spec.type is ParameterType.LIST_STRING else [value]

    if spec.options:
        for element in elements:
            if element not in spec.options:
                raise ParameterError(spec.name, f"{element!r} is not one of: {_options_text(spec.options)}")

    if spec.validation_regex is not None:
        try:
            pattern = re.compile(spec.validation_regex)
        except re.error as exc:
            raise ParameterError(
                spec.name, f"invalid validation regex {spec.validation_regex!r}: {exc}"
            ) from exc
        for element in elements:
            if pattern.fullmatch(element) is None:
                raise ParameterError(
                    spec.name,
                    _with_custom_error(spec, f"{element!r} does not match {spec.validation_regex!r}"),
                )

    if spec.type is not ParameterType.NUMBER:
        return
    number = _number_value(value)
    assert number is not None  # checked by canonical_value above
    if spec.validation_min is not None and number < spec.validation_min:
        raise ParameterError(
            spec.name,
            _with_custom_error(
                spec, f"{format_number(number)} is below the minimum {format_number(spec.validation_min)}"
            ),
        )
    if spec.validation_max is not None and number > spec.validation_max:
        raise ParameterError(
            spec.name,
            _with_custom_error(
                spec, f"{format_number(number)} is above the maximum {format_number(spec.validation_max)}"
            ),
        )
    if spec.validation_monotonic is not None and previous is not None:
        old = _number_value(previous)
        if old is None:
            return
        if spec.validation_monotonic == "increasing" and number < old:
            raise ParameterError(
                spec.name,
                f"must be monotonically increasing: cannot go from {format_number(old)} "
                f"to {format_number(number)}",
            )
        if spec.validation_monotonic == "decreasing" and number > old:
            raise ParameterError(
                spec.name,
                f"must be monotonically decreasing: cannot go from {format_number(old)} "
                f"to {format_number(number)}",
            )


# --- resolution ------------------------------------------------------------------------------------


def unknown_parameter_reason(specs: Sequence[ParameterSpec]) -> str:
    if not specs:
        return "unknown parameter; this template version declares no parameters"
    return "unknown parameter; declared parameters: " + ", ".join(spec.name for spec in specs)


def _canonical_or_same(spec: ParameterSpec, value: str) -> str:
    try:
        return canonical_value(spec, value)
    except ParameterError:
        return value


def resolve_parameters(
    specs: Sequence[ParameterSpec],
    *,
    explicit: Mapping[str, object],
    preset: Mapping[str, str] | None = None,
    previous: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The parameter values of a new build, canonical and validated, in declaration order.

    Each value comes from ``explicit``, else ``preset``, else ``previous`` (the workspace's last build;
    None for build 1), else the default. An explicit value of None counts as not given.
    Raises :class:`ParameterError` on the first problem, in declaration order after unknown names.
    """
    by_name = {spec.name: spec for spec in specs}
    for source in (explicit, preset or {}):
        for name in source:
            if name not in by_name:
                raise ParameterError(name, unknown_parameter_reason(specs))

    resolved: dict[str, str] = {}
    for spec in specs:
        raw: object = None
        if explicit.get(spec.name) is not None:
            raw = explicit[spec.name]
        elif preset is not None and spec.name in preset:
            raw = preset[spec.name]
        elif previous is not None and spec.name in previous:
            raw = previous[spec.name]
        elif spec.default is not None:
            raw = spec.default
        if raw is None:
            if spec.required:
                raise ParameterError(spec.name, "is required")
            continue

        value = canonical_value(spec, raw)
        old = previous.get(spec.name) if previous is not None else None
        validate_value(spec, value, old)
        if not spec.mutable and old is not None:
            old_canonical = _canonical_or_same(spec, old)
            if old_canonical != value:
                raise ParameterError(
                    spec.name,
                    f"is immutable: cannot change from '{old_canonical}' to '{value}' after the first build",
                )
        resolved[spec.name] = value
    check_values_total(resolved)
    return resolved
