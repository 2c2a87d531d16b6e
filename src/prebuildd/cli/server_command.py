"""`prebuildd server`: flags built from the ServerConfig declaration, then logging, then run.

The flags are generated from `config_options()`, so an option is declared once (in runtime/config.py). A flag
left out is not passed on, so pydantic-settings fills it from its `PREBUILDD_*` variable, else the default.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from typing import Any

import typer
from pydantic import ValidationError
from rich.markup import escape

from prebuildd.cli.flags import configure_logging
from prebuildd.runtime.config import ConfigOption, ServerConfig, config_options

_ANNOTATIONS: dict[str, Any] = {
    "duration": str | None,
    "integer": str | None,
    "path": str | None,
    "text": str | None,
    "boolean": bool | None,
    "tags": list[str] | None,
}
_METAVARS = {
    "duration": "DURATION",
    "integer": "INTEGER",
    "path": "PATH",
    "text": "TEXT",
    "tags": "KEY=VALUE",
}


def _parameter(option: ConfigOption) -> inspect.Parameter:
    envs = " or ".join((option.env, *option.env_aliases))
    # The server's help is rendered as rich markup, where a bare [...] would be read as a style tag.
    help_text = escape(f"{option.help} [env: {envs}] [default: {option.default}]")
    decls = [f"--{option.flag}/--no-{option.flag}"] if option.kind == "boolean" else [f"--{option.flag}"]
    info = typer.Option(
        None,
        *decls,
        help=help_text,
        show_default=False,
        metavar=_METAVARS.get(option.kind),
    )
    return inspect.Parameter(
        option.field, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=_ANNOTATIONS[option.kind]
    )


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """The flags present on the command line (typer gives None, or an empty tuple, for the others)."""
    return {
        name: value for name, value in values.items() if value is not None and value != () and value != []
    }


def _explain(exc: ValidationError, given: dict[str, Any]) -> typer.BadParameter:
    """A click usage error (exit code 2) naming each bad value's flag (or the variable it came from)."""
    options = config_options()
    by_name = {o.field: o for o in options} | {o.env.lower(): o for o in options}
    by_name |= {alias.lower(): o for o in options for alias in o.env_aliases}
    problems: list[tuple[str | None, str]] = []
    for error in exc.errors():
        reason = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
        option = by_name.get(str(error["loc"][0]).lower()) if error["loc"] else None
        if option is None:
            problems.append((None, reason))
        elif option.field in given:
            problems.append((f"'--{option.flag}'", reason))
        else:
            problems.append((f"{option.env} (--{option.flag})", reason))
    (hint, reason), *more = problems
    lines = [reason, *(f"Invalid value for {h}: {r}" if h else f"Invalid value: {r}" for h, r in more)]
    return typer.BadParameter("\n".join(lines), param_hint=hint)


def load_config(values: dict[str, Any]) -> ServerConfig:
    """The ServerConfig from the given flags over the environment over the defaults; a bad value is a
    usage error (exit code 2) naming the option."""
    given = _given(values)
    try:
        return ServerConfig(**given)
    except ValidationError as exc:
        raise _explain(exc, given) from None


def register(app: typer.Typer) -> None:
    def server(**values: Any) -> None:
        """Run the server: HTTP API, embedded provisioner daemons and the reconciler."""
        config = load_config(values)
        configure_logging(config.log_format, config.log_level)
        from prebuildd.server.process import Server
        from prebuildd.server.startup import StartupError

        try:
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(Server(config).run())
        except StartupError:  # already logged as the one server.start_failed line, and cleaned up
            raise typer.Exit(1) from None

    # The options come from the declaration: typer reads the signature, so it is built from the fields.
    server.__signature__ = inspect.Signature([_parameter(o) for o in config_options()])  # type: ignore[attr-defined]
    app.command("server")(server)
