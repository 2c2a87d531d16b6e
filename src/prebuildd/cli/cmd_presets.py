"""`prebuildd presets list|set TEMPLATE`: a version's presets (named parameter sets) and their prebuild pools.

`set` lives here, with its group: the CLI imports a command group's module when the group is run, so a command
defined in another module (it was in cmd_prebuilds) was missing from `prebuildd presets`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from prebuildd.cli.client import TokenOption, UrlOption, connect, fail, quote
from prebuildd.cli.output import JsonOption, note, print_json, print_table, warn
from prebuildd.domain.durations import format_duration
from prebuildd.domain.words import plural

presets_app = typer.Typer(
    name="presets", help="Presets: named parameter sets with prebuild pools.", no_args_is_help=True
)


def _status(preset: dict[str, Any]) -> str:
    status = str(preset.get("prebuild_status") or "-")
    reason = preset.get("prebuild_status_reason")
    return f"{status} ({reason})" if reason and status != "healthy" else status


@presets_app.command("list")
def list_presets(
    template: Annotated[str, typer.Argument(help="The template's name.", show_default=False)],
    version: Annotated[
        str | None, typer.Option("--version", help="A version, e.g. v2 (default: the active one).")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """The presets of a template version, with their pool settings and status."""
    with connect(url, token) as api:
        presets = api.get(f"/templates/{quote(template)}/presets", {"version": version})
    if as_json:
        print_json(presets)
        return
    print_table(
        ["NAME", "VERSION", "PARAMETERS", "INSTANCES", "TTL", "SCHEDULES", "STATUS", "LAST ERROR"],
        (
            [
                p["name"],
                p.get("version"),
                p.get("parameters"),
                p.get("desired_instances"),
                format_duration(p["ttl_seconds"]) if p.get("ttl_seconds") else None,
                [f"{s.get('cron')}: {s.get('instances')}" for s in p.get("schedules") or []],
                _status(p),
                p.get("prebuild_last_error"),
            ]
            for p in presets
        ),
        empty=f"{template} has no presets{' in ' + version if version else ''}.",
    )


TemplateArg = Annotated[str, typer.Argument(help="The template's name.", show_default=False)]


@presets_app.command("set")
def set_pool(
    template: TemplateArg,
    preset: Annotated[str, typer.Argument(help="The preset's name.", show_default=False)],
    instances: Annotated[int | None, typer.Option("--instances", min=0, help="Desired prebuilds.")] = None,
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="Recycle prebuilds older than this (e.g. 8h; 0: never).")
    ] = None,
    schedule: Annotated[
        list[str] | None,
        typer.Option(
            "--schedule", help="CRON=N: N instances during the cron's hours (minute field '*'); repeatable."
        ),
    ] = None,
    clear_schedules: Annotated[
        bool, typer.Option("--clear-schedules", help="Remove every schedule.")
    ] = False,
    timezone: Annotated[
        str | None, typer.Option("--timezone", help="IANA timezone of the schedules.")
    ] = None,
    autoscale_min: Annotated[
        int | None, typer.Option("--autoscale-min", help="Autoscale: never fewer prebuilds than this.")
    ] = None,
    autoscale_max: Annotated[
        int | None, typer.Option("--autoscale-max", help="Autoscale: never more prebuilds than this.")
    ] = None,
    target_hit_rate: Annotated[
        float | None,
        typer.Option("--target-hit-rate", help="Autoscale: the share of claims that should find a prebuild."),
    ] = None,
    no_autoscale: Annotated[
        bool, typer.Option("--no-autoscale", help="Stop autoscaling: back to instances and schedules.")
    ] = False,
    expression: Annotated[
        str | None,
        typer.Option(
            "--expression", help="Target expression, e.g. 'max(scheduled_target, ceil(claim_rate_10m * 5))'."
        ),
    ] = None,
    no_expression: Annotated[
        bool, typer.Option("--no-expression", help="Remove the target expression.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Change a preset's pool without a new template version (autoscale options turn autoscaling on)."""
    body: dict[str, Any] = {"instances": instances, "ttl": ttl, "timezone": timezone}
    scale = {"min": autoscale_min, "max": autoscale_max, "target_hit_rate": target_hit_rate}
    if any(v is not None for v in scale.values()):
        body["autoscale"] = {k: v for k, v in scale.items() if v is not None}
    if expression is not None:
        body["expression"] = expression
    if schedule or clear_schedules:
        parsed = []
        for item in schedule or []:
            cron, sep, count = item.rpartition("=")
            if not sep or not count.strip().isdigit():
                fail(f"--schedule {item!r}: expected CRON=N, e.g. '* 8-18 * * 1-5=5'", 2)
            parsed.append({"cron": cron.strip(), "instances": int(count)})
        body["schedules"] = parsed
    payload = {k: v for k, v in body.items() if v is not None}
    if no_autoscale:
        payload["autoscale"] = None
    if no_expression:
        payload["expression"] = None
    with connect(url, token) as api:
        result = api.patch(f"/templates/{quote(template)}/presets/{quote(preset)}", payload)
    ttl_text = format_duration(result["ttl_seconds"]) if result["ttl_seconds"] else "none"
    schedules = ", ".join(f"{s['cron']}={s['instances']}" for s in result["schedules"]) or "none"
    sizing = ""
    if result.get("autoscale"):
        a = result["autoscale"]
        sizing = f", autoscale {a['min']}..{a['max']} for {a['target_hit_rate']:.0%} hits"
    elif result.get("expression"):
        sizing = f", expression {result['expression']!r}"
    note(
        f"{template}/{result['preset']}: {plural(result['desired_instances'], 'instance')}, ttl {ttl_text}, "
        f"timezone {result['timezone']}, schedules {schedules}{sizing}"
    )
    for warning in result.get("warnings", []):
        warn(warning)
