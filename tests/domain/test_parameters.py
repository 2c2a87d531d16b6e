from __future__ import annotations

import pytest

from prebuildd.domain.parameters import (
    ParameterError,
    ParameterSpec,
    ParameterType,
    canonical_value,
    resolve_parameters,
    validate_value,
)

NUMBER = ParameterType.NUMBER
BOOL = ParameterType.BOOL
LIST = ParameterType.LIST_STRING
STRING = ParameterType.STRING


# --- ParameterError and ParameterSpec --------------------------------------------------------------


def test_parameter_error_message_and_fields() -> None:
    error = ParameterError("cpu", "is required")
    assert error.parameter == "cpu"
    assert error.reason == "is required"
    assert str(error) == "parameter `cpu`: is required"
    assert isinstance(error, ValueError)


def test_parameter_type_values() -> None:
    assert [t.value for t in ParameterType] == ["string", "number", "bool", "list(string)"]
    assert ParameterType("list(string)") is LIST


@pytest.mark.parametrize(
    "spec",
    [
        ParameterSpec(name="plain"),
        ParameterSpec(
            name="cpu",
            type=NUMBER,
            required=False,
            default="2",
            mutable=False,
            options=("1", "2", "4"),
            validation_regex=r"\d+",
            validation_min=1.0,
            validation_max=8.5,
            validation_monotonic="increasing",
            validation_error="pick a sane size",
            description="CPU cores",
            display_name="CPU",
        ),
        ParameterSpec(name="tags", type=LIST, default='["a"]', options=("a", "b")),
        ParameterSpec(name="debug", type=BOOL, required=True),
    ],
)
def test_spec_json_round_trip(spec: ParameterSpec) -> None:
    encoded = spec.to_json()
    assert encoded["type"] == spec.type.value
    assert ParameterSpec.from_json(encoded) == spec


def test_spec_to_json_is_plain_json() -> None:
    import json

    spec = ParameterSpec(name="x", type=LIST, options=("a",), validation_min=None)
    assert json.loads(json.dumps(spec.to_json())) == spec.to_json()


def test_spec_from_json_fills_defaults() -> None:
    assert ParameterSpec.from_json({"name": "x"}) == ParameterSpec(name="x")


# --- canonical_value -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (3, "3"),
        (-2, "-2"),
        (0, "0"),
        (3.0, "3"),
        (3.5, "3.5"),
        (-0.25, "-0.25"),
        ("3", "3"),
        (" 3 ", "3"),
        ("3.0", "3"),
        ("3.50", "3.5"),
        ("+4", "4"),
        ("-0", "0"),
        ("1e3", "1000"),
        (".5", "0.5"),
        ("007", "7"),
    ],
)
def test_canonical_number(raw: object, expected: str) -> None:
    assert canonical_value(ParameterSpec(name="cpu", type=NUMBER), raw) == expected


@pytest.mark.parametrize("raw", ["abc", "", "1_000", "nan", "inf", "3 cores", True, False, None, [1], {}])
def test_canonical_number_rejects(raw: object) -> None:
    with pytest.raises(ParameterError) as info:
        canonical_value(ParameterSpec(name="cpu", type=NUMBER), raw)
    assert info.value.parameter == "cpu"
    assert info.value.reason == f"expected a number, got {raw!r}"


@pytest.mark.parametrize("raw", ["1e999", "-1e999", "1" * 5000, "9" * 400, 10**400, -(10**309)])
def test_a_number_beyond_a_float_is_refused_as_out_of_range_not_a_crash(raw: object) -> None:
    # A 5,000-digit value once reached int(), which refuses more than 4300 digits: a 500 on workspace create.
    with pytest.raises(ParameterError) as info:
        canonical_value(ParameterSpec(name="cpu", type=NUMBER), raw)
    assert info.value.parameter == "cpu"
    assert info.value.reason.startswith("number out of range: at most ±1.798e+308")
    assert len(info.value.reason) < 200  # the value is previewed, not repeated


def test_leading_zeros_do_not_count_against_the_digit_limit() -> None:
    spec = ParameterSpec(name="cpu", type=NUMBER)
    assert canonical_value(spec, "0" * 5000 + "12") == "12"
    assert canonical_value(spec, "-" + "0" * 5000) == "0"
    assert canonical_value(spec, str(10**300)) == str(10**300)


def test_canonical_number_message_shape() -> None:
    with pytest.raises(ParameterError, match=r"^parameter `cpu`: expected a number, got 'abc'$"):
        canonical_value(ParameterSpec(name="cpu", type=NUMBER), "abc")


@pytest.mark.parametrize("raw", [float("nan"), float("inf"), float("-inf")])
def test_canonical_number_rejects_non_finite_floats(raw: float) -> None:
    with pytest.raises(ParameterError, match="expected a number"):
        canonical_value(ParameterSpec(name="cpu", type=NUMBER), raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, "true"),
        (False, "false"),
        ("true", "true"),
        ("FALSE", "false"),
        ("True", "true"),
        (" false ", "false"),
    ],
)
def test_canonical_bool(raw: object, expected: str) -> None:
    assert canonical_value(ParameterSpec(name="debug", type=BOOL), raw) == expected


@pytest.mark.parametrize("raw", ["yes", "1", 1, 0, "", None, ["true"]])
def test_canonical_bool_rejects(raw: object) -> None:
    with pytest.raises(ParameterError) as info:
        canonical_value(ParameterSpec(name="debug", type=BOOL), raw)
    assert str(info.value) == f"parameter `debug`: expected a bool (true or false), got {raw!r}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (["a", "b"], '["a","b"]'),
        ([], "[]"),
        (("x",), '["x"]'),
        ('["a", "b"]', '["a","b"]'),
        ("[]", "[]"),
        (["é"], '["é"]'),
        (['quo"te'], '["quo\\"te"]'),
    ],
)
def test_canonical_list(raw: object, expected: str) -> None:
    assert canonical_value(ParameterSpec(name="tags", type=LIST), raw) == expected


@pytest.mark.parametrize("raw", ["a,b", '["a", 1]', '{"a": "b"}', "", [1, 2], ["a", None], 3, None])
def test_canonical_list_rejects(raw: object) -> None:
    with pytest.raises(ParameterError) as info:
        canonical_value(ParameterSpec(name="tags", type=LIST), raw)
    assert info.value.parameter == "tags"
    assert info.value.reason.startswith("expected a list of strings")
    assert repr(raw) in info.value.reason


@pytest.mark.parametrize("raw", ["", "hello", "3", "true", '["a"]'])
def test_canonical_string_is_identity(raw: str) -> None:
    assert canonical_value(ParameterSpec(name="repo"), raw) == raw


@pytest.mark.parametrize("raw", [3, 3.5, True, None, ["a"], {"a": 1}])
def test_canonical_string_rejects_non_strings(raw: object) -> None:
    with pytest.raises(ParameterError) as info:
        canonical_value(ParameterSpec(name="repo"), raw)
    assert str(info.value) == f"parameter `repo`: expected a string, got {raw!r}"


# --- validate_value --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        (ParameterSpec(name="p"), "anything"),
        (ParameterSpec(name="p", options=("a", "b")), "a"),
        (ParameterSpec(name="p", validation_regex=r"https://.*"), "https://x"),
        (ParameterSpec(name="p", type=NUMBER, validation_min=1, validation_max=8), "1"),
        (ParameterSpec(name="p", type=NUMBER, validation_min=1, validation_max=8), "8"),
        (ParameterSpec(name="p", type=NUMBER, validation_min=1.5), "1.5"),
        (ParameterSpec(name="p", type=NUMBER, options=("1", "2")), "2"),
        (ParameterSpec(name="p", type=BOOL), "false"),
        (ParameterSpec(name="p", type=LIST), "[]"),
        (ParameterSpec(name="p", type=LIST, options=("a", "b")), '["b","a"]'),
        (ParameterSpec(name="p", type=LIST, validation_regex="[a-z]+"), '["ab","c"]'),
        # min/max do not apply to strings or lists
        (ParameterSpec(name="p", validation_min=5, validation_max=6), "1"),
        (ParameterSpec(name="p", type=LIST, validation_min=5), '["a"]'),
    ],
)
def test_validate_accepts(spec: ParameterSpec, value: str) -> None:
    validate_value(spec, value)


@pytest.mark.parametrize(
    ("spec", "value", "reason"),
    [
        (ParameterSpec(name="p", type=NUMBER), "x", "expected a number, got 'x'"),
        (ParameterSpec(name="p", type=BOOL), "maybe", "expected a bool (true or false), got 'maybe'"),
        (
            ParameterSpec(name="p", type=LIST),
            "a",
            "expected a list of strings (a JSON array of strings), got 'a'",
        ),
        (ParameterSpec(name="p", options=("a", "b")), "x", "'x' is not one of: a, b"),
        (ParameterSpec(name="p", type=NUMBER, options=("1", "2")), "3", "'3' is not one of: 1, 2"),
        (ParameterSpec(name="p", type=LIST, options=("a", "b")), '["a","z"]', "'z' is not one of: a, b"),
        (
            ParameterSpec(name="p", validation_regex="https://"),
            "https://x",
            "'https://x' does not match 'https://'",
        ),
        (ParameterSpec(name="p", validation_regex="[a-z]+"), "abc1", "'abc1' does not match '[a-z]+'"),
        (
            ParameterSpec(name="p", validation_regex="^https://", validation_error="must be https"),
            "http://x",
            "'http://x' does not match '^https://': must be https",
        ),
        (
            ParameterSpec(name="p", type=LIST, validation_regex="[a-z]+"),
            '["ok","NO"]',
            "'NO' does not match '[a-z]+'",
        ),
        (ParameterSpec(name="p", type=NUMBER, validation_min=1), "0", "0 is below the minimum 1"),
        (ParameterSpec(name="p", type=NUMBER, validation_min=1.5), "1.25", "1.25 is below the minimum 1.5"),
        (ParameterSpec(name="p", type=NUMBER, validation_max=8), "9", "9 is above the maximum 8"),
        (
            ParameterSpec(name="p", type=NUMBER, validation_max=8, validation_error="too big"),
            "9",
            "9 is above the maximum 8: too big",
        ),
        (
            ParameterSpec(name="p", type=NUMBER, validation_min=2, validation_error="too small"),
            "1",
            "1 is below the minimum 2: too small",
        ),
    ],
)
def test_validate_rejects(spec: ParameterSpec, value: str, reason: str) -> None:
    with pytest.raises(ParameterError) as info:
        validate_value(spec, value)
    assert info.value.parameter == "p"
    assert info.value.reason == reason
    assert str(info.value) == f"parameter `p`: {reason}"


def test_validate_custom_error_not_used_for_options() -> None:
    spec = ParameterSpec(name="p", options=("a",), validation_error="custom")
    with pytest.raises(ParameterError) as info:
        validate_value(spec, "b")
    assert "custom" not in info.value.reason


@pytest.mark.parametrize(
    ("monotonic", "previous", "value", "ok"),
    [
        ("increasing", "2", "3", True),
        ("increasing", "2", "2", True),
        ("increasing", "2", "1", False),
        ("increasing", None, "1", True),
        ("decreasing", "2", "1", True),
        ("decreasing", "2", "2", True),
        ("decreasing", "2", "3", False),
        ("decreasing", None, "9", True),
        (None, "5", "1", True),
        ("increasing", "not a number", "1", True),
    ],
)
def test_validate_monotonic(monotonic: str | None, previous: str | None, value: str, ok: bool) -> None:
    spec = ParameterSpec(name="disk", type=NUMBER, validation_monotonic=monotonic)
    if ok:
        validate_value(spec, value, previous)
        return
    with pytest.raises(ParameterError) as info:
        validate_value(spec, value, previous)
    assert info.value.parameter == "disk"
    assert info.value.reason == f"must be monotonically {monotonic}: cannot go from {previous} to {value}"


def test_validate_bad_regex_in_spec_is_a_parameter_error() -> None:
    with pytest.raises(ParameterError, match="invalid validation regex"):
        validate_value(ParameterSpec(name="p", validation_regex="("), "x")


# --- resolve_parameters ----------------------------------------------------------------------------

SPECS = (
    ParameterSpec(name="repo", required=True),
    ParameterSpec(name="cpu", type=NUMBER, default="2", validation_min=1, validation_max=8),
    ParameterSpec(name="region", default="eu", options=("eu", "us"), mutable=False),
    ParameterSpec(name="note"),
    ParameterSpec(name="disk", type=NUMBER, default="10", validation_monotonic="increasing"),
)


def test_resolve_defaults_and_explicit() -> None:
    assert resolve_parameters(SPECS, explicit={"repo": "r"}) == {
        "repo": "r",
        "cpu": "2",
        "region": "eu",
        "disk": "10",
    }


def test_resolve_result_is_in_declaration_order() -> None:
    result = resolve_parameters(SPECS, explicit={"disk": 20, "repo": "r", "note": "n"})
    assert list(result) == ["repo", "cpu", "region", "note", "disk"]


def test_resolve_canonicalises_explicit_values() -> None:
    result = resolve_parameters(SPECS, explicit={"repo": "r", "cpu": 4.0, "disk": "12.0"})
    assert result["cpu"] == "4"
    assert result["disk"] == "12"


@pytest.mark.parametrize(
    ("explicit", "preset", "previous", "expected_cpu"),
    [
        ({"cpu": 3}, {"cpu": "4"}, {"cpu": "5"}, "3"),
        ({}, {"cpu": "4"}, {"cpu": "5"}, "4"),
        ({}, None, {"cpu": "5"}, "5"),
        ({}, {}, {"repo": "r"}, "2"),
        ({}, None, None, "2"),
        ({"cpu": None}, {"cpu": "4"}, None, "4"),
    ],
)
def test_resolve_precedence(
    explicit: dict[str, object],
    preset: dict[str, str] | None,
    previous: dict[str, str] | None,
    expected_cpu: str,
) -> None:
    result = resolve_parameters(SPECS, explicit={"repo": "r", **explicit}, preset=preset, previous=previous)
    assert result["cpu"] == expected_cpu


def test_resolve_required_from_preset_or_previous() -> None:
    assert resolve_parameters(SPECS, explicit={}, preset={"repo": "p"})["repo"] == "p"
    assert resolve_parameters(SPECS, explicit={}, previous={"repo": "old"})["repo"] == "old"


def test_resolve_required_missing() -> None:
    with pytest.raises(ParameterError) as info:
        resolve_parameters(SPECS, explicit={})
    assert info.value.parameter == "repo"
    assert info.value.reason == "is required"
    assert str(info.value) == "parameter `repo`: is required"


def test_resolve_optional_without_default_is_omitted() -> None:
    result = resolve_parameters(SPECS, explicit={"repo": "r"})
    assert "note" not in result


@pytest.mark.parametrize("source", ["explicit", "preset"])
def test_resolve_unknown_parameter(source: str) -> None:
    kwargs: dict[str, object] = {"explicit": {"repo": "r"}}
    if source == "explicit":
        kwargs["explicit"] = {"repo": "r", "nope": "1"}
    else:
        kwargs["preset"] = {"nope": "1"}
    with pytest.raises(ParameterError) as info:
        resolve_parameters(SPECS, **kwargs)  # type: ignore[arg-type]
    assert info.value.parameter == "nope"
    assert info.value.reason == "unknown parameter; declared parameters: repo, cpu, region, note, disk"


def test_resolve_unknown_parameter_without_declarations() -> None:
    with pytest.raises(ParameterError, match="declares no parameters"):
        resolve_parameters((), explicit={"x": "1"})


def test_resolve_unknown_reported_before_missing_required() -> None:
    with pytest.raises(ParameterError) as info:
        resolve_parameters(SPECS, explicit={"nope": "1"})
    assert info.value.parameter == "nope"


def test_resolve_previous_parameters_not_declared_any_more_are_ignored() -> None:
    result = resolve_parameters(SPECS, explicit={}, previous={"repo": "r", "gone": "x"})
    assert "gone" not in result


@pytest.mark.parametrize(
    ("explicit", "reason"),
    [
        ({"cpu": "lots"}, "expected a number, got 'lots'"),
        ({"cpu": 9}, "9 is above the maximum 8"),
        ({"cpu": 0}, "0 is below the minimum 1"),
        ({"region": "mars"}, "'mars' is not one of: eu, us"),
        ({"repo": 5}, "expected a string, got 5"),
    ],
)
def test_resolve_validates(explicit: dict[str, object], reason: str) -> None:
    with pytest.raises(ParameterError) as info:
        resolve_parameters(SPECS, explicit={"repo": "r", **explicit})
    assert info.value.reason == reason


def test_resolve_validates_preset_values() -> None:
    with pytest.raises(ParameterError, match=r"^parameter `cpu`: 12 is above the maximum 8$"):
        resolve_parameters(SPECS, explicit={"repo": "r"}, preset={"cpu": "12"})


def test_resolve_first_error_in_spec_order() -> None:
    with pytest.raises(ParameterError) as info:
        resolve_parameters(SPECS, explicit={"disk": "x", "cpu": "y", "region": "z"})
    assert info.value.parameter == "repo"
    with pytest.raises(ParameterError) as info:
        resolve_parameters(SPECS, explicit={"repo": "r", "disk": "x", "cpu": "y", "region": "z"})
    assert info.value.parameter == "cpu"


def test_resolve_immutable_cannot_change_after_first_build() -> None:
    previous = {"repo": "r", "cpu": "2", "region": "eu", "disk": "10"}
    with pytest.raises(ParameterError) as info:
        resolve_parameters(SPECS, explicit={"region": "us"}, previous=previous)
    assert info.value.parameter == "region"
    assert info.value.reason == "is immutable: cannot change from 'eu' to 'us' after the first build"


def test_resolve_immutable_via_preset_also_refused() -> None:
    with pytest.raises(ParameterError, match="is immutable"):
        resolve_parameters(
            SPECS, explicit={}, preset={"region": "us"}, previous={"repo": "r", "region": "eu"}
        )


def test_resolve_immutable_same_value_is_fine() -> None:
    previous = {"repo": "r", "region": "eu"}
    assert resolve_parameters(SPECS, explicit={"region": "eu"}, previous=previous)["region"] == "eu"
    assert resolve_parameters(SPECS, explicit={}, previous=previous)["region"] == "eu"


def test_resolve_immutable_free_on_first_build() -> None:
    assert resolve_parameters(SPECS, explicit={"repo": "r", "region": "us"}, previous=None)["region"] == "us"


def test_resolve_immutable_not_in_previous_can_be_set() -> None:
    # a parameter added by a newer version: the previous build had no value for it
    result = resolve_parameters(SPECS, explicit={"region": "us"}, previous={"repo": "r"})
    assert result["region"] == "us"


def test_resolve_immutable_compares_canonical_forms() -> None:
    spec = ParameterSpec(name="size", type=NUMBER, mutable=False)
    assert resolve_parameters([spec], explicit={"size": 3}, previous={"size": "3.0"}) == {"size": "3"}
    with pytest.raises(ParameterError, match="cannot change from '3' to '4'"):
        resolve_parameters([spec], explicit={"size": 4}, previous={"size": "3.0"})


def test_resolve_monotonic_against_previous() -> None:
    previous = {"repo": "r", "disk": "20"}
    assert resolve_parameters(SPECS, explicit={"disk": 30}, previous=previous)["disk"] == "30"
    with pytest.raises(ParameterError) as info:
        resolve_parameters(SPECS, explicit={"disk": 10}, previous=previous)
    assert info.value.parameter == "disk"
    assert "monotonically increasing" in info.value.reason


def test_resolve_list_and_bool() -> None:
    specs = [
        ParameterSpec(name="tags", type=LIST, options=("a", "b", "c")),
        ParameterSpec(name="debug", type=BOOL, default="false"),
    ]
    assert resolve_parameters(specs, explicit={"tags": ["a", "c"], "debug": "TRUE"}) == {
        "tags": '["a","c"]',
        "debug": "true",
    }
    assert resolve_parameters(specs, explicit={"tags": '["b"]'}) == {"tags": '["b"]', "debug": "false"}


@pytest.mark.parametrize(
    "bad",
    [
        {"validation_min": 10**400},
        {"validation_max": float("inf")},
        {"validation_min": float("nan")},
        {"default": "1" * 5000},
    ],
)
def test_a_declaration_from_a_daemon_with_an_unusable_number_is_a_value_error(bad: dict[str, object]) -> None:
    # An import outcome arrives as JSON from a standalone daemon: its API answers 400 for a ValueError (an
    # OverflowError, or an inf stored as JSON, was a 500 on complete).
    with pytest.raises(ValueError, match=r"finite number|number out of range"):
        ParameterSpec.from_json({"name": "cpu", "type": "number", **bad})
