"""Target expressions: every variable, the clamp, the fallback, the whole-number rule, refused constructs, and the
manifest keys of autoscale and expression (refused at push with the key named)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from prebuildd.domain.autoscale import WINDOWS, AutoscaleSettings, Demand
from prebuildd.domain.expression import VARIABLES, evaluate, problem
from prebuildd.domain.manifest import ManifestError, parse_manifest
from prebuildd.domain.planner import PresetSnapshot, RunningPrebuild, plan_preset
from prebuildd.domain.snapshot import PresetRow
from prebuildd.domain.targets import expression_variables, pool_target

NOW = datetime(2026, 3, 4, 13, 30, tzinfo=UTC)  # a Wednesday


def snapshot(**kw: object) -> PresetSnapshot:
    base: dict[str, object] = {
        "preset_id": uuid4(),
        "template_name": "t",
        "preset_name": "p",
        "version_name": "v",
        "active": True,
        "desired_instances": 2,
    }
    base.update(kw)
    return PresetSnapshot(**base)  # type: ignore[arg-type]


def row(snap: PresetSnapshot, **kw: object) -> PresetRow:
    base: dict[str, object] = {
        "preset_id": snap.preset_id,
        "preset_name": "p",
        "template_id": uuid4(),
        "template_name": "t",
        "organization_id": uuid4(),
        "version_id": uuid4(),
        "version_name": "v",
        "active": True,
        "desired_instances": snap.desired_instances,
    }
    base.update(kw)
    return PresetRow(**base)  # type: ignore[arg-type]


DEMAND = Demand(claims=(1, 2, 6, 12, 24), misses=(0, 1, 2, 3, 4), day=40, first_at=NOW - timedelta(days=1))


def test_variables_of_the_pool_and_its_demand() -> None:
    old = NOW - timedelta(hours=2)
    snap = snapshot(
        running=(
            RunningPrebuild(uuid4(), old),
            RunningPrebuild(uuid4(), old, ready=False),
            RunningPrebuild(uuid4(), NOW - timedelta(days=2)),
        ),
        ttl_seconds=86400,
        starting=4,
        stopping=5,
        deleting=6,
        timezone="Asia/Tokyo",
    )
    values = expression_variables(snap, DEMAND, NOW, scheduled=2)
    assert set(values) == set(VARIABLES)
    assert (values["running"], values["eligible"], values["expired"]) == (3, 1, 1)
    assert (values["starting"], values["stopping"], values["deleting"]) == (4, 5, 6)
    assert (values["hour"], values["weekday"]) == (22, 3)  # 22:30 on Wednesday in Tokyo; 0 = Sunday
    assert values["scheduled_target"] == 2
    for i, n in enumerate(WINDOWS):
        assert values[f"claims_{n}m"] == DEMAND.claims[i]
        assert values[f"misses_{n}m"] == DEMAND.misses[i]
        assert values[f"claim_rate_{n}m"] == DEMAND.claims[i] / n


@pytest.mark.parametrize("name", VARIABLES)
def test_each_variable_is_read(name: str) -> None:
    values = dict.fromkeys(VARIABLES, 0.0)
    values[name] = 7
    assert evaluate(name, values, scheduled=1).target == 7


@pytest.mark.parametrize(
    ("text", "target", "source"),
    [
        ("max(scheduled_target, ceil(claim_rate_10m * 5))", 3, "expression"),  # 0.2 * 5 = 1 < 3
        ("ceil(claim_rate_30m * 20)", 4, "expression"),
        ("500", 100, "expression"),  # clamped to [0, 100]
        ("-3", 0, "expression"),
        ("claim_rate_10m * 5", 1, "expression"),  # 1.0 is a whole number
        ("claim_rate_10m * 7", 3, "expression_fallback"),  # 1.4 is not: the scheduled target
        ("6.0", 6, "expression"),
        ("1 / (running - running)", 3, "expression_fallback"),  # division by zero
        ("clamp(claims_60m, 1, 5)", 5, "expression"),
        ("10 if hour >= 9 and weekday < 6 else 1", 10, "expression"),
        ("floor(abs(-4.5)) + min(1, 2)", 5, "expression"),
    ],
)
def test_results_clamp_and_fallback(text: str, target: int, source: str) -> None:
    values = expression_variables(snapshot(), DEMAND, NOW, scheduled=3)
    values["claim_rate_10m"] = 0.2
    result = evaluate(text, values, scheduled=3)
    if text == "claim_rate_10m * 7":
        assert result.error == "gave 1.4, not a whole number (use ceil or floor)"
    assert (result.target, result.source) == (target, source)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("__import__('os').system('x')", "calls"),
        ("running.real", "attribute"),
        ("open('f')", "calls 'open'"),
        ("[1][0]", "Subscript"),
        ("2 ** 1000000", "Pow"),
        ("lambda: 1", "Lambda"),
        ("nope + 1", "unknown name 'nope'"),
        ("'3'", "only numbers"),
        ("max()", "at least 1"),
        ("ceil(1, 2)", "takes 1"),
        ("max(*[1])", "plain arguments"),
        ("1 +", "not an expression"),
        ("+".join(["1"] * 300), "characters"),
        ("1" + "+1" * 100, "parts"),
        ("True", "only numbers"),
    ],
)
def test_refused_constructs(text: str, why: str) -> None:
    reason = problem(text)
    assert reason is not None and why in reason, reason
    assert evaluate(text, dict.fromkeys(VARIABLES, 1.0), scheduled=2).source == "expression_fallback"


def test_pool_target_reports_the_source() -> None:
    snap = snapshot()
    ok = pool_target(snap, row(snap, target_expression="claims_120m"), DEMAND, NOW)
    assert (ok.snapshot.target_override, ok.snapshot.target_source) == (24, "expression")
    bad = pool_target(snap, row(snap, target_expression="1 / 0"), DEMAND, NOW)
    assert (bad.snapshot.target_override, bad.snapshot.target_source) == (2, "expression_fallback")
    assert "divides by zero" in bad.snapshot.target_reason
    plain = pool_target(snap, row(snap), DEMAND, NOW)
    assert plain.snapshot.target_source == "scheduled" and plain.snapshot.target_override is None
    plan = plan_preset(ok.snapshot, NOW)
    assert (plan.state.desired, plan.create) == (24, 24)


def test_a_pure_demand_expression_is_zero_on_a_cold_start() -> None:
    snap = snapshot()
    cold = pool_target(snap, row(snap, target_expression="ceil(claim_rate_10m * 5)"), Demand(), NOW)
    assert cold.snapshot.target_override == 0  # the reference warns about this; autoscale falls back instead
    auto = pool_target(snap, row(snap, autoscale=AutoscaleSettings().as_dict()), Demand(), NOW)
    assert (auto.snapshot.target_override, auto.snapshot.target_source) == (2, "autoscale_fallback")


POOL = """
provisioner = "echo"
[[presets]]
name = "small"
[presets.prebuilds]
instances = 2
{extra}
"""


def test_manifest_autoscale_and_expression() -> None:
    m = parse_manifest(POOL.format(extra="autoscale = { min = 1, max = 20, target_hit_rate = 0.9 }"))
    settings = m.presets[0].prebuilds
    assert settings is not None and settings.autoscale == AutoscaleSettings(
        min=1, max=20, target_hit_rate=0.9
    )
    m = parse_manifest(POOL.format(extra='expression = "max(scheduled_target, ceil(claim_rate_10m * 5))"'))
    settings = m.presets[0].prebuilds
    assert settings is not None and settings.expression == "max(scheduled_target, ceil(claim_rate_10m * 5))"


@pytest.mark.parametrize(
    ("extra", "key", "why"),
    [
        ("autoscale = { min = -1 }", "autoscale.min", "between 0 and 1000"),
        ("autoscale = { max = 5000 }", "autoscale.max", "between 1 and 1000"),
        ("autoscale = { min = 5, max = 3 }", "autoscale.max", ">= min"),
        ("autoscale = { target_hit_rate = 1.5 }", "autoscale.target_hit_rate", "below 1"),
        ("autoscale = { target_hit_rate = 0 }", "autoscale.target_hit_rate", "above 0"),
        ('autoscale = { stabilization = "2d" }', "autoscale.stabilization", "at most"),
        ('autoscale = { lead_time = "p50" }', "autoscale.lead_time", "mean, p90"),
        ("autoscale = { maxx = 3 }", "autoscale", "maxx"),
        ('expression = "running.real"', "expression", "attribute"),
        ('expression = "os()"', "expression", "only min, max"),
        ("expression = 3", "expression", "string"),
        ('expression = "1"\nautoscale = { max = 3 }', "expression", "not both"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(extra: str, key: str, why: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(POOL.format(extra=extra))
    assert info.value.key.startswith(f"presets[small].prebuilds.{key}"), info.value.key
    assert why in info.value.reason, info.value.reason
    assert info.value.status == 400
