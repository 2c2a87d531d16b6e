"""`prebuildd presets list TEMPLATE`: a version's presets (named parameter sets) and their prebuild pools."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from prebuildd.cli.client import TokenOption, UrlOption, connect, quote
from prebuildd.cli.output import JsonOption, print_json, print_table
from prebuildd.domain.durations import format_duration

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
