"""`prebuildd audit`: the audit log, newest first (owners), from `GET /api/v1/audit`, paged by its cursor."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from prebuildd.cli.client import TokenOption, UrlOption, connect
from prebuildd.cli.output import JsonOption, age, print_json, print_table

audit_app = typer.Typer(
    name="audit",
    help="The audit log: who did what, when, from which token, on what, and how it ended (owners).",
)

_PAGE = 500


def _object(entry: dict[str, Any]) -> str:
    kind, name = entry.get("object_type") or "", entry.get("object_name") or entry.get("object_id") or ""
    return f"{kind} {name}".strip() or "-"


def _outcome(entry: dict[str, Any]) -> str:
    if entry["outcome"] == "ok":
        return "ok"
    return f"{entry['outcome']}: {entry.get('error_message') or entry.get('error_code') or ''}".rstrip(": ")


@audit_app.callback(invoke_without_command=True)
def audit(
    actor: Annotated[
        str | None, typer.Option("--actor", help="Only this user's actions (name or id).")
    ] = None,
    action: Annotated[
        str | None,
        typer.Option("--action", help="Only this action (template.push), or a prefix ending in '.' (user.)."),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only entries since this time, or this long ago (24h, 7d).")
    ] = None,
    object_: Annotated[
        str | None, typer.Option("--object", help="Only entries on this object (name or id).")
    ] = None,
    outcome: Annotated[
        str | None, typer.Option("--outcome", help="ok, denied, invalid, conflict or error.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many entries.")] = 100,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Audit entries, newest first."""
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    with connect(url, token) as api:
        while len(entries) < limit:
            params = {
                "actor": actor,
                "action": action,
                "since": since,
                "object": object_,
                "outcome": outcome,
                "limit": min(_PAGE, limit - len(entries)),
                "cursor": cursor,
            }
            page = api.get("/audit", {k: v for k, v in params.items() if v is not None})
            entries.extend(page["entries"])
            cursor = page.get("next_cursor")
            if cursor is None:
                break
    if as_json:
        print_json(entries)
        return
    print_table(
        ["WHEN", "ACTOR", "ACTION", "OBJECT", "OUTCOME", "SOURCE", "REQUEST"],
        (
            [
                age(e["at"]),
                e["actor"],
                e["action"],
                _object(e),
                _outcome(e),
                e.get("source_ip") or "-",
                e.get("request_id") or "-",
            ]
            for e in entries
        ),
        empty="No audit entries.",
    )
