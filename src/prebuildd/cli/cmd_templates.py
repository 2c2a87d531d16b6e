"""`prebuildd templates …`: push a template directory as a new version, list, show, activate, deprecate, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from prebuildd.cli.client import TokenOption, UrlOption, connect, fail, quote
from prebuildd.cli.follow import TimeoutOption, require_wait, wait_for_import
from prebuildd.cli.output import (
    JsonOption,
    Waiting,
    age,
    note,
    print_fields,
    print_json,
    print_table,
    warn,
)
from prebuildd.templates.archive import pack_directory

templates_app = typer.Typer(name="templates", help="Templates and their versions.", no_args_is_help=True)

NameArgument = Annotated[str, typer.Argument(help="The template's name.", show_default=False)]


@templates_app.command("push")
def push(
    name: NameArgument,
    directory: Annotated[
        Path,
        typer.Argument(
            help="The template directory (with prebuildd.toml at its root).",
            exists=True,
            file_okay=False,
            show_default=False,
        ),
    ],
    activate: Annotated[
        bool, typer.Option("--activate", help="Make the new version the active one.")
    ] = False,
    message: Annotated[str | None, typer.Option("--message", "-m", help="What changed.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for the import job, showing its logs.")
    ] = True,
    timeout: TimeoutOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Push DIR as a new version of template NAME (created on first push), then wait for its import."""
    require_wait(wait, timeout)
    try:
        archive = pack_directory(directory)
    except ValueError as exc:
        fail(str(exc))
    with connect(url, token) as api:
        pushed = api.call(
            "POST",
            f"/templates/{quote(name)}/versions",
            params={"activate": activate, "message": message},
            content=archive,
            content_type="application/gzip",
        )
        template, version = pushed["template"], pushed["version"]
        created = " (new template)" if pushed.get("created_template") else ""
        note(f"Pushed {template} {version}{created}.")
        for warning in pushed.get("warnings") or []:
            warn(warning)
        if not wait:
            note(f"Import job {pushed['job_id']} queued; see `prebuildd templates versions {template}`.")
            return
        hint = f"the import goes on; see `prebuildd templates versions {template}`"
        with Waiting(f"importing {template} {version}", on_interrupt=hint) as waiting:
            result = wait_for_import(api, template, version, waiting, timeout=timeout, hint=hint)
        status = result.get("import_status")
        if status != "succeeded":
            fail(
                f"import of {template} {version} {status}: {result.get('import_error') or 'no error recorded'}"
            )
        for warning in result.get("warnings") or []:
            if warning not in (pushed.get("warnings") or []):
                warn(warning)
        if result.get("active"):
            note(f"{template} {version} imported in {waiting.took()} and is active.")
        else:
            note(
                f"{template} {version} imported in {waiting.took()}; it is not active: "
                f"`prebuildd templates activate {template} {version}` makes it so."
            )


@templates_app.command("list")
def list_templates(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """Every template, with its active version."""
    with connect(url, token) as api:
        templates = api.get("/templates")
    if as_json:
        print_json(templates)
        return
    print_table(
        ["NAME", "ACTIVE", "DEPRECATED", "UPDATED", "DESCRIPTION"],
        (
            [
                t["name"],
                t.get("active_version"),
                _deprecation(t),
                age(t.get("updated_at")),
                t.get("description"),
            ]
            for t in templates
        ),
        empty="No templates yet: push one with `prebuildd templates push NAME DIR`.",
    )


def _deprecation(template: dict[str, Any]) -> str:
    if not template.get("deprecated"):
        return "no"
    return str(template.get("deprecation_message") or "yes")


@templates_app.command("show")
def show(
    name: NameArgument, as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None
) -> None:
    """A template, and the parameters of its active version."""
    with connect(url, token) as api:
        template = api.get(f"/templates/{quote(name)}")
        if as_json:
            print_json(template)
            return
        active = template.get("active_version")
        version = api.get(f"/templates/{quote(name)}/versions/{quote(active)}") if active else None
    print_fields(
        [
            ("name", template["name"]),
            ("display name", template.get("display_name")),
            ("description", template.get("description")),
            ("active version", active),
            ("deprecated", _deprecation(template)),
            ("created", age(template.get("created_at"))),
            ("updated", age(template.get("updated_at"))),
        ]
    )
    if version and version.get("parameters"):
        print_table(
            ["PARAMETER", "TYPE", "DEFAULT", "REQUIRED", "MUTABLE", "DESCRIPTION"],
            (
                [
                    p.get("name"),
                    p.get("type"),
                    p.get("default"),
                    p.get("required"),
                    p.get("mutable"),
                    p.get("description"),
                ]
                for p in version["parameters"]
            ),
        )


@templates_app.command("versions")
def versions(
    name: NameArgument, as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None
) -> None:
    """A template's versions, newest first, with their import status."""
    with connect(url, token) as api:
        found = api.get(f"/templates/{quote(name)}/versions")
    if as_json:
        print_json(found)
        return
    print_table(
        ["VERSION", "ACTIVE", "IMPORT", "PROVISIONER", "CREATED", "MESSAGE", "ERROR"],
        (
            [
                v["name"],
                v.get("active"),
                v.get("import_status"),
                v.get("provisioner"),
                age(v.get("created_at")),
                v.get("message"),
                v.get("import_error"),
            ]
            for v in found
        ),
        empty=f"{name} has no versions.",
    )


@templates_app.command("activate")
def activate_version(
    name: NameArgument,
    version: Annotated[str, typer.Argument(help="The version to make active, e.g. v3.", show_default=False)],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Make VERSION the active version of NAME: new workspaces and prebuilds use it."""
    with connect(url, token) as api:
        template = api.patch(f"/templates/{quote(name)}", {"active_version": version})
    note(f"{template['name']} now uses {template.get('active_version')}.")


@templates_app.command("deprecate")
def deprecate(
    name: NameArgument,
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="What to use instead; shown to users.")
    ] = None,
    undo: Annotated[bool, typer.Option("--undo", help="Lift the deprecation.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Deprecate a template (no new workspaces from it), or lift that with --undo."""
    if undo and message:
        raise typer.BadParameter("--message makes no sense with --undo")
    body: dict[str, Any] = {"deprecated": not undo}
    if message is not None:
        body["deprecation_message"] = message
    with connect(url, token) as api:
        template = api.patch(f"/templates/{quote(name)}", body)
    note(f"{template['name']} is {'deprecated' if template.get('deprecated') else 'no longer deprecated'}.")


@templates_app.command("delete")
def delete(name: NameArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Delete a template (refused while users still have workspaces from it)."""
    with connect(url, token) as api:
        api.delete(f"/templates/{quote(name)}")
    note(f"Deleted template {name}.")
