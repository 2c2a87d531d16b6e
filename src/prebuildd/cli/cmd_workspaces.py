"""`prebuildd workspaces …`: create, list, show, start, stop, delete, builds, logs.

A workspace is named by its name (the caller's own), ``owner/name`` (template admins) or its id. Commands that
start a build can wait for it (`--wait`): its logs go to stdout, a spinner to stderr, and a failed build ends
the command with exit code 1 and the job's error.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from prebuildd.cli.client import ApiClient, TokenOption, UrlOption, connect, fail, quote
from prebuildd.cli.follow import FINISHED, TimeoutOption, print_build_logs, require_wait, wait_for_build
from prebuildd.cli.output import JsonOption, Waiting, age, note, print_fields, print_json, print_table
from prebuildd.cli.workspace_ref import find_workspace

workspaces_app = typer.Typer(name="workspaces", help="Workspaces and their builds.", no_args_is_help=True)

WorkspaceArgument = Annotated[
    str, typer.Argument(help="Workspace name, OWNER/NAME, or id.", show_default=False, metavar="NAME")
]
WaitOption = Annotated[bool, typer.Option("--wait", help="Wait for the build, showing its logs.")]


def _parameters(values: list[str]) -> dict[str, str]:
    parameters: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--param")
        parameters[key] = value
    return parameters


def _status(build: dict[str, Any] | None) -> str:
    if not build:
        return "-"
    return f"{build.get('transition')} {build.get('status')}"


def _await(
    api: ApiClient, workspace: dict[str, Any], build: dict[str, Any], timeout: float | None = None
) -> dict[str, Any]:
    """Wait for ``build`` of ``workspace``; exits 1 with the job's error unless it succeeded (124 when
    ``timeout`` elapses first)."""
    number, transition, name = build.get("build_number"), build.get("transition"), workspace["name"]
    ref = f"{workspace['owner']}/{name}" if workspace.get("owner") else name
    hint = f"the build goes on; follow it with `prebuildd workspaces logs {ref} --follow`"
    with Waiting(f"{transition} {name} (build #{number})", on_interrupt=hint) as waiting:
        final = wait_for_build(api, build, waiting, timeout=timeout, hint=hint)
    status = final.get("status")
    if status != "succeeded":
        failure_class = f" [{final['failure_class']}]" if final.get("failure_class") else ""
        error = final.get("error") or "no error recorded"
        fail(
            f"build #{number} ({transition}) of {name} {status} after {waiting.took()}{failure_class}: {error}"
        )
    note(f"{name}: {transition} succeeded in {waiting.took()}.")
    return final


@workspaces_app.command("create")
def create(
    name: Annotated[
        str, typer.Argument(help="The new workspace's name.", show_default=False, metavar="NAME")
    ],
    template: Annotated[str, typer.Option("--template", "-t", help="The template to build it from.")],
    preset: Annotated[
        str | None, typer.Option("--preset", help="A preset; may hand over a ready prebuild.")
    ] = None,
    param: Annotated[list[str], typer.Option("--param", "-p", help="NAME=VALUE; repeat for several.")] = [],  # noqa: B006
    owner: Annotated[
        str | None, typer.Option("--owner", help="Create it for this user (template admins).")
    ] = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create a workspace from a template's active version, optionally with a preset and parameters."""
    require_wait(wait, timeout)
    body: dict[str, Any] = {"name": name, "template": template}
    if preset:
        body["preset"] = preset
    if param:
        body["parameters"] = _parameters(param)
    if owner:
        body["owner"] = owner
    with connect(url, token) as api:
        started = time.monotonic()
        workspace = api.post("/workspaces", body)
        seconds = time.monotonic() - started
        build = workspace.get("latest_build") or {}
        if as_json:
            print_json(workspace)
        elif workspace.get("claimed"):
            took = workspace.get("seconds") or seconds
            note(f"Created workspace {workspace['name']} in {took * 1000:.0f} ms: claimed a ready prebuild.")
            if build.get("reason") == "claim" and build.get("status") not in FINISHED:
                note(f"Its claim build #{build.get('build_number')} personalises it ({build.get('status')}).")
        else:
            number, status = build.get("build_number"), build.get("status")
            note(f"Created workspace {workspace['name']}: building cold (build #{number} {status}).")
        if not wait or not build:
            return
        if build.get("status") not in FINISHED:
            _await(api, workspace, build, timeout)
        elif build.get("status") != "succeeded":  # refused at once, e.g. a parameter the template rejects
            fail(f"build #{build.get('build_number')} of {workspace['name']} failed: {build.get('error')}")


@workspaces_app.command("list")
def list_workspaces(
    all_users: Annotated[
        bool, typer.Option("--all", help="Everyone's workspaces (template admins).")
    ] = False,
    owner: Annotated[
        str | None, typer.Option("--owner", help="This user's workspaces (template admins).")
    ] = None,
    template: Annotated[str | None, typer.Option("--template", "-t", help="Only from this template.")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Your workspaces (or everyone's with --all, or one user's with --owner)."""
    if all_users and owner:
        raise typer.BadParameter("pass either --all or --owner", param_hint="--all")
    with connect(url, token) as api:
        found = api.get("/workspaces", {"owner": "all" if all_users else owner or "me", "template": template})
    if as_json:
        print_json(found)
        return
    print_table(
        ["NAME", "OWNER", "TEMPLATE", "VERSION", "STATUS", "LAST BUILD", "ERROR"],
        (
            [
                w["name"],
                w.get("owner"),
                w.get("template"),
                (w.get("latest_build") or {}).get("version"),
                _status(w.get("latest_build")),
                age((w.get("latest_build") or {}).get("created_at")),
                (w.get("latest_build") or {}).get("error"),
            ]
            for w in found
        ),
        empty="No workspaces.",
        keep=("STATUS",),
    )


@workspaces_app.command("show")
def show(
    workspace: WorkspaceArgument,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """A workspace and its latest build."""
    with connect(url, token) as api:
        found = find_workspace(api, workspace)
    if as_json:
        print_json(found)
        return
    build = found.get("latest_build") or {}
    print_fields(
        [
            ("name", found["name"]),
            ("id", found["id"]),
            ("owner", found.get("owner")),
            ("template", found.get("template")),
            ("version", build.get("version")),
            ("preset", build.get("preset")),
            ("status", _status(build)),
            ("build", build.get("build_number")),
            ("reason", build.get("reason")),
            ("error", build.get("error")),
            ("parameters", build.get("parameters")),
            ("outputs", build.get("outputs")),
            ("created", age(found.get("created_at"))),
        ]
    )


def _transition(
    workspace: str, transition: str, wait: bool, timeout: float | None, url: str | None, token: str | None
) -> None:
    require_wait(wait, timeout)
    with connect(url, token) as api:
        found = find_workspace(api, workspace)
        build = api.post(f"/workspaces/{quote(found['id'])}/builds", {"transition": transition})
        note(f"{transition} build #{build.get('build_number')} of {found['name']} queued.")
        if wait:
            _await(api, found, build, timeout)


@workspaces_app.command("start")
def start(
    workspace: WorkspaceArgument,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Start a stopped workspace."""
    _transition(workspace, "start", wait, timeout, url, token)


@workspaces_app.command("stop")
def stop(
    workspace: WorkspaceArgument,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Stop a workspace (its data is kept)."""
    _transition(workspace, "stop", wait, timeout, url, token)


@workspaces_app.command("delete")
def delete(
    workspace: WorkspaceArgument,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Delete a workspace and what its template built."""
    _transition(workspace, "delete", wait, timeout, url, token)


@workspaces_app.command("builds")
def builds(
    workspace: WorkspaceArgument,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """A workspace's builds, newest first."""
    with connect(url, token) as api:
        found = api.get(f"/workspaces/{quote(find_workspace(api, workspace)['id'])}/builds")
    if as_json:
        print_json(found)
        return
    print_table(
        ["#", "TRANSITION", "STATUS", "VERSION", "REASON", "CREATED", "ERROR"],
        (
            [
                b.get("build_number"),
                b.get("transition"),
                b.get("status"),
                b.get("version"),
                b.get("reason"),
                age(b.get("created_at")),
                b.get("error"),
            ]
            for b in found
        ),
        empty="No builds.",
    )


@workspaces_app.command("logs")
def logs(
    workspace: WorkspaceArgument,
    build_number: Annotated[
        int | None, typer.Option("--build", "-b", help="Build number (default: the latest).")
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the build finishes.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """A build's logs (the latest build's by default)."""
    with connect(url, token) as api:
        found = find_workspace(api, workspace)
        history = api.get(f"/workspaces/{quote(found['id'])}/builds")
        chosen = [b for b in history if build_number is None or b.get("build_number") == build_number]
        if not chosen:
            fail(
                f"{found['name']} has no build #{build_number}; see `prebuildd workspaces builds {workspace}`"
            )
        build = max(chosen, key=lambda b: int(b.get("build_number") or 0))
        if follow and build.get("status") not in FINISHED:
            _await(api, found, build)
        else:
            print_build_logs(api, str(build["id"]), Waiting(""))
