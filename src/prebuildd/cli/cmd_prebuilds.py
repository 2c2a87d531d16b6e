"""`prebuildd prebuilds …` (status, pause, resume, retry, invalidate, cleanup, explain) and `presets set`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from prebuildd.cli.client import TokenOption, UrlOption, connect
from prebuildd.cli.output import JsonOption, age, note, print_fields, print_json, print_table

prebuilds_app = typer.Typer(
    name="prebuilds",
    help="Prebuild pools: status, pause/resume, retry, cleanup, explain.",
    no_args_is_help=True,
)


def _pct(claims: int, misses: int) -> str:
    total = claims + misses
    return f"{100 * claims / total:.0f}%" if total else "-"


def _status_text(p: dict[str, Any]) -> str:
    if p["status"] == "hard_limited":
        return f"hard-limited: {p['hard_limit_reason']}"
    if p["status"] == "backing_off" and p.get("blocked"):
        return str(p["blocked"])
    return str(p["status"])


@prebuilds_app.command("status")
def status(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """Every pool: desired, running, eligible, starting; its status and what happens next."""
    with connect(url, token) as api:
        data = api.get("/prebuilds/status")
    if as_json:
        print_json(data)
        return
    if data["paused"]:
        note("reconciliation is PAUSED: no prebuild is created or deleted (prebuildd prebuilds resume)")
    rows = []
    for p in data["presets"]:
        hits = p.get("extra", {}).get("hit_rate", {})
        rows.append(
            [
                p["template"],
                p["preset"],
                p["version"],
                p["desired"],
                p["running"],
                p["eligible"],
                p["expired"],
                p["starting"],
                p["deleting"],
                p["failed"],
                _status_text(p),
                _pct(hits.get("claims_hour", 0), hits.get("misses_hour", 0)),
                _sizing_text(p),
                p.get("blocked") or p["next_action"],
            ]
        )
    print_table(
        [
            "TEMPLATE",
            "PRESET",
            "VERSION",
            "DESIRED",
            "RUNNING",
            "ELIGIBLE",
            "EXPIRED",
            "STARTING",
            "DELETING",
            "FAILED",
            "STATUS",
            "HIT 1H",
            "SIZING",
            "NEXT",
        ],
        rows,
        empty="No preset has a prebuild pool.",
    )


def _sizing_text(p: dict[str, Any]) -> str:
    """Where the target comes from, and the autoscale formula's size when it says something else."""
    source = str(p.get("target_source") or "scheduled")
    recommended = p.get("recommended")
    if recommended is not None and recommended != p["desired"]:
        return f"{source}, recommended {recommended}"
    return source


def _set_paused(paused: bool, url: str | None, token: str | None) -> None:
    with connect(url, token) as api:
        api.put("/prebuilds/settings", {"reconciliation_paused": paused})
    note("reconciliation paused: pools stay as they are" if paused else "reconciliation resumed")


@prebuilds_app.command("pause")
def pause(url: UrlOption = None, token: TokenOption = None) -> None:
    """Stop every reconcile action (status and metrics stay current; queued jobs still run)."""
    _set_paused(True, url, token)


@prebuilds_app.command("resume")
def resume(url: UrlOption = None, token: TokenOption = None) -> None:
    """Resume reconciliation: pools go back to their targets."""
    _set_paused(False, url, token)


TemplateArg = Annotated[str, typer.Argument(help="The template's name.", show_default=False)]


@prebuilds_app.command("retry")
def retry(
    template: TemplateArg,
    preset: Annotated[str | None, typer.Argument(help="One preset (default: all of the template).")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Clear a hard limit or a backoff: earlier failures stop counting, creation resumes now."""
    with connect(url, token) as api:
        result = api.post("/prebuilds/retry", {"template": template, "preset": preset})
    note(
        f"retrying {template}: {', '.join(result['presets'])} (failed prebuilds stay as evidence until cleanup)"
    )


@prebuilds_app.command("invalidate")
def invalidate(
    template: TemplateArg,
    preset: Annotated[str | None, typer.Argument(help="One preset (default: all of the template).")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Replace every prebuild of a template (or one preset), e.g. after its base image changed."""
    with connect(url, token) as api:
        result = api.post("/prebuilds/invalidate", {"template": template, "preset": preset})
    note(f"invalidated {template}: {', '.join(result['presets'])}; the reconciler replaces their prebuilds")


@prebuilds_app.command("cleanup")
def cleanup(
    template: Annotated[str | None, typer.Option("--template", help="Only this template.")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Only this preset.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be deleted.")] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Delete failed prebuilds kept as evidence (nothing is provisioned again to delete a never-run one)."""
    with connect(url, token) as api:
        result = api.post("/prebuilds/cleanup", {"template": template, "preset": preset, "dry_run": dry_run})
    if as_json:
        print_json(result)
        return
    print_table(
        ["WORKSPACE", "TEMPLATE", "PRESET", "FAILED", "ERROR"],
        (
            [
                p["workspace_name"],
                p["template"],
                p["preset"],
                age(p["completed_at"] or p["created_at"]),
                (p["error"] or "")[:100],
            ]
            for p in result["prebuilds"]
        ),
        empty="No failed prebuilds.",
    )
    if result["prebuilds"]:
        verb = "would delete" if dry_run else "deleting"
        note(f"{verb} {len(result['prebuilds'])} failed prebuilds")
    for error in result["errors"]:
        note(f"not deleted: {error}")
    if result["errors"]:
        raise typer.Exit(1)


def _claim_builds_field(counts: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The `claim builds` line of explain: shown once the preset's claims ran any in the last day."""
    if not counts or not counts["total"]:
        return []
    text = f"{counts['total']} in the last day: {counts['succeeded']} succeeded, {counts['failed']} failed"
    if counts["in_progress"]:
        text += f", {counts['in_progress']} running"
    if counts["avg_seconds"] is not None:
        text += f"; {counts['avg_seconds']:.1f} s on average, {counts['max_seconds']:.1f} s at most"
    if counts.get("last_error"):
        text += f"; last error: {counts['last_error'].splitlines()[0]}"
    return [("claim builds", text)]


@prebuilds_app.command("explain")
def explain(
    template: TemplateArg,
    preset: Annotated[str, typer.Argument(help="The preset's name.", show_default=False)],
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Why a pool is the way it is: its state now and its last decisions, newest first."""
    with connect(url, token) as api:
        data = api.get("/prebuilds/explain", {"template": template, "preset": preset})
    if as_json:
        print_json(data)
        return
    s = data["status"]
    print_fields(
        [
            ("preset", f"{s['template']}/{s['preset']} ({s['version']})"),
            ("status", _status_text(s)),
            (
                "pool",
                f"desired {s['desired']}, running {s['running']}, eligible {s['eligible']}, "
                f"starting {s['starting']}, expired {s['expired']}, failed {s['failed']}",
            ),
            ("next", s.get("blocked") or s["next_action"]),
            *([("target", s["sizing"])] if s.get("sizing") else []),
            *([("recommended", s["recommendation"])] if s.get("recommendation") else []),
            *([("schedule", s["schedule_problem"])] if s.get("schedule_problem") else []),
            *_claim_builds_field(data.get("claim_builds")),
        ]
    )
    print_table(
        ["WHEN", "WHAT", "DECISION"],
        ([age(e["at"]), e["kind"], e["message"]] for e in data["decisions"]),
        empty="No decision recorded yet.",
    )
