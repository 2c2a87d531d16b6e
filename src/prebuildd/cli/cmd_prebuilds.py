"""`prebuildd prebuilds …` (status, pause, resume, retry, invalidate, cleanup, explain) and `presets set`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text

from prebuildd.cli.client import TokenOption, UrlOption, connect
from prebuildd.cli.output import (
    JsonOption,
    age,
    note,
    print_fields,
    print_json,
    print_lines,
    print_table,
    stdout_console,
)
from prebuildd.domain.words import plural

prebuilds_app = typer.Typer(
    name="prebuilds",
    help="Prebuild pools: status, pause/resume, retry, cleanup, explain.",
    no_args_is_help=True,
)


def _pct(claims: int, misses: int) -> str:
    total = claims + misses
    return f"{100 * claims / total:.0f}%" if total else "-"


STATUS_WORDS: dict[str, tuple[str, str]] = {
    "healthy": ("healthy", "green"),
    "backing_off": ("backoff", "yellow"),
    "hard_limited": ("limited", "bold red"),
    "paused": ("paused", "yellow"),
    "inactive": ("inactive", "dim"),
}
"""The API's status as one short word, and its colour (shown only on a terminal, never with NO_COLOR)."""


def status_word(status: str) -> Text:
    word, style = STATUS_WORDS.get(status, (status, ""))
    return Text(word, style=style)


def _action(next_action: str) -> str:
    """The action part of a next action ('creating 2' of 'creating 2: desired 3, running 1')."""
    return next_action.partition(": ")[0]


WideOption = Annotated[
    bool,
    typer.Option("--wide", "-w", help="Every column, nothing cut (the table may be wider than 80 columns)."),
]


def _status_rows(presets: list[dict[str, Any]], wide: bool) -> tuple[list[str], list[list[object]]]:
    if wide:
        columns = [
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
            "ERROR",
        ]
    else:
        columns = ["PRESET", "READY", "STARTING", "FAILED", "STATUS", "HIT", "NEXT"]
    rows: list[list[object]] = []
    for p in presets:
        hits = p.get("extra", {}).get("hit_rate", {})
        hit = _pct(hits.get("claims_hour", 0), hits.get("misses_hour", 0))
        if wide:
            error = " | ".join(line.strip() for line in (p.get("error") or "").splitlines() if line.strip())
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
                    status_word(p["status"]),
                    hit,
                    _sizing_text(p),
                    p["next_action"],
                    error,
                ]
            )
        else:
            rows.append(
                [
                    f"{p['template']}/{p['preset']}",
                    f"{p['eligible']}/{p['desired']}",
                    p["starting"],
                    p["failed"],
                    status_word(p["status"]),
                    hit,
                    _action(p["next_action"]),
                ]
            )
    return columns, rows


COUNT_COLUMNS = (
    "READY",
    "DESIRED",
    "RUNNING",
    "ELIGIBLE",
    "EXPIRED",
    "STARTING",
    "DELETING",
    "FAILED",
    "HIT",
    "HIT 1H",
)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def first_error_line(error: str) -> str:
    """The line of an error to show alone: its first, joined with the next when it only introduces it
    ('create.sh exited with status 128:' then 'fatal: repository not found'); '…' when more lines follow."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    shown = 1
    if lines[0].endswith(":") and len(lines) > 1:
        shown = 2
    text = " ".join(lines[:shown])
    return f"{text} …" if len(lines) > shown else text


def shell_lines(words: list[str], width: int, indent: str = "  ") -> list[str]:
    """A command as lines of at most ``width`` where it can be: broken between words with a trailing ' \\', so
    that it still pastes into a shell (a word is never cut)."""
    lines: list[str] = []
    current = indent + words[0]
    for word in words[1:]:
        if len(current) + 1 + len(word) + 2 <= width:
            current += f" {word}"
        else:
            lines.append(current + " \\")
            current = f"{indent}    {word}"
    return [*lines, current]


def _pool_notes(presets: list[dict[str, Any]], width: int) -> list[str]:
    """Under the table, per pool: the autoscale formula's size when it differs from the pool's; the first line
    of the error holding a pool back, cut to ``width``, and the command that shows all of it."""
    lines = []
    for p in presets:
        name = f"{p['template']}/{p['preset']}"
        if p.get("recommended") is not None and p["recommended"] != p["desired"] and p.get("recommendation"):
            lines.append(_cut(f"{name}: {p['recommendation']}", width))
        if not p.get("error"):
            continue
        lines.append(f"{name}:")
        lines.append(_cut(f"  {first_error_line(p['error'])}", width))
        command = f"prebuildd prebuilds explain {p['template']} {p['preset']}"
        hint = f"  the whole error: {command}"
        if len(hint) <= width:
            lines.append(hint)
        else:  # a command is never cut: on lines of its own, broken as a shell reads it
            lines.append("  the whole error:")
            lines.extend(shell_lines(["prebuildd prebuilds explain", p["template"], p["preset"]], width))
    return lines


@prebuilds_app.command("status")
def status(
    wide: WideOption = False, as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None
) -> None:
    """Every pool: ready of desired, starting, failed; its status and what happens next.

    The table fits 80 columns: a failing pool's error is shown by its first line under the table (the whole of it
    with `explain`); --wide shows every column and --json the API's answer.
    """
    with connect(url, token) as api:
        data = api.get("/prebuilds/status")
    if as_json:
        print_json(data)
        return
    if data["paused"]:
        note("reconciliation is PAUSED: no prebuild is created or deleted (prebuildd prebuilds resume)")
    columns, rows = _status_rows(data["presets"], wide)
    print_table(
        columns,
        rows,
        empty="No preset has a prebuild pool.",
        cut=not wide,
        right=COUNT_COLUMNS,
        keep=("STATUS",),
        minimums={"PRESET": 16, "NEXT": 21},
    )
    if not wide:
        notes = _pool_notes(data["presets"], stdout_console().width)
        if notes:
            print_lines(["", *notes])


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
        note(f"{verb} {plural(len(result['prebuilds']), 'failed prebuild')}")
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
            ("status", s["status"].replace("hard_limited", "hard-limited").replace("_", " ")),
            (
                "pool",
                f"desired {s['desired']}, running {s['running']}, eligible {s['eligible']}, "
                f"starting {s['starting']}, expired {s['expired']}, failed {s['failed']}",
            ),
            ("next", s["next_action"]),
            *([("error", s["error"])] if s.get("error") else []),
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
