"""The `prebuildd` command: the server, and a client of the HTTP API for every operation.

Command groups are imported when they are run (or listed by `--help`), not when the CLI starts: the standalone
daemon (`prebuildd provisioner start`) loads the provisioner side only, never the client commands' modules or
the server's. The top-level commands (`server`, `login`/`logout`/`whoami`, `agent`) are small modules that
import what they run inside their functions, so they are registered eagerly.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer._click.exceptions import ClickException  # typer 0.29 runs on a private copy of click
from typer.core import TyperGroup
from typer.exceptions import Abort

from prebuildd.cli import agent_command, cmd_auth, server_command

_LAZY_GROUPS: dict[str, tuple[str, str]] = {
    # name: (module, its typer app), in the order `--help` lists them
    "templates": ("prebuildd.cli.cmd_templates", "templates_app"),
    "presets": ("prebuildd.cli.cmd_presets", "presets_app"),
    "workspaces": ("prebuildd.cli.cmd_workspaces", "workspaces_app"),
    "orgs": ("prebuildd.cli.cmd_orgs", "orgs_app"),
    "users": ("prebuildd.cli.cmd_users", "users_app"),
    "tokens": ("prebuildd.cli.cmd_users", "tokens_app"),
    "jobs": ("prebuildd.cli.cmd_jobs", "jobs_app"),
    "provisioner": ("prebuildd.cli.provisioner_commands", "provisioner_app"),
    "prebuilds": ("prebuildd.cli.cmd_prebuilds", "prebuilds_app"),
    "audit": ("prebuildd.cli.cmd_audit", "audit_app"),
    "db": ("prebuildd.cli.cmd_db", "db_app"),
}


class _LazyGroup(TyperGroup):
    """The root group: eager commands first, then the command groups, each imported on first use."""

    # Typed Any: typer 0.29 runs on its private copy of click (typer._click), whose types it does not export.
    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *_LAZY_GROUPS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in _LAZY_GROUPS:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = _LAZY_GROUPS[cmd_name]
        sub_app: typer.Typer = getattr(importlib.import_module(module_name), attribute)
        return typer.main.get_group(sub_app)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command; a usage error is printed in the style of every other error (``error: …`` on
        stderr, then the usage and where the help is) and ends with exit code 2."""
        if not standalone_mode:
            return super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        try:
            # not standalone: errors come back here, and an Exit comes back as its code
            code = super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except ClickException as exc:
            _usage_error(exc)
            sys.exit(exc.exit_code)
        except Abort:
            print("error: aborted", file=sys.stderr)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _usage_error(exc: Any) -> None:
    """``error: <what was wrong>``, then the command's usage and its --help, as the other errors look."""
    print(f"error: {exc.format_message()}", file=sys.stderr)
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        print(ctx.get_usage(), file=sys.stderr)
        print(f"See `{ctx.command_path} --help`.", file=sys.stderr)


app = typer.Typer(
    name="prebuildd",
    help="Warm pools of prebuilt workspaces.",
    cls=_LazyGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def installed_version() -> str:
    """The installed distribution's version (the wheel's metadata), else the package's own."""
    try:
        return importlib.metadata.version("prebuildd")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        from prebuildd import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"prebuildd {installed_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        is_eager=True,
        callback=_print_version,
    ),
    org: str | None = typer.Option(
        None,
        "--org",
        envvar="PREBUILDD_ORG",
        help="The organization client commands act in (also accepted after the command; default: the one "
        "saved by `prebuildd login` or `prebuildd orgs use`, else your only one).",
        show_default=False,
    ),
) -> None:
    """prebuildd: warm pools of prebuilt workspaces."""
    # Read by the client (main() lifts --org out of the command line into the environment already).
    if org:
        os.environ["PREBUILDD_ORG"] = org


server_command.register(app)
cmd_auth.register(app)
agent_command.register(app)


def lift_org_option(argv: list[str]) -> list[str]:
    """``argv`` without ``--org NAME`` / ``--org=NAME`` (before a ``--``), whose value goes to ``PREBUILDD_ORG``:
    every client command takes ``--org``, wherever it is written, without each one declaring it."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out.extend(argv[i:])
            break
        if arg == "--org" and i + 1 < len(argv):
            os.environ["PREBUILDD_ORG"] = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--org="):
            os.environ["PREBUILDD_ORG"] = arg.split("=", 1)[1]
            i += 1
            continue
        out.append(arg)
        i += 1
    return out


def main() -> None:
    app(args=lift_org_option(sys.argv[1:]), prog_name="prebuildd")
