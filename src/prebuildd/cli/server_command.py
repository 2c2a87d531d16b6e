"""`prebuildd server`: flags built from the ServerConfig declaration, then logging, then run.

The flags are generated from `config_options()`, so an option is declared once (in runtime/config.py). A flag
left out is not passed on, so pydantic-settings fills it from its `PREBUILDD_*` variable, else the config file
(``--config``, else /etc/prebuildd/config.toml when present), else the default.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.markup import escape

from prebuildd.cli.flags import configure_logging
from prebuildd.runtime.config import (
    CONFIG_FILE_ENV,
    DEFAULT_CONFIG_FILE,
    ConfigFileError,
    ConfigOption,
    ServerConfig,
    config_options,
    load_server_config,
    read_config_file,
    render_config,
)

KEYWORD = inspect.Parameter.KEYWORD_ONLY

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


@dataclass(frozen=True)
class _Origins:
    """Where the values came from: the flags given, the config file read (if any) and its keys."""

    given: dict[str, Any]
    file: Path | None = None
    file_values: dict[str, Any] = field(default_factory=dict)

    def of(self, option: ConfigOption) -> str:
        """``flag``, ``env NAME``, ``file`` or ``default``: which source set ``option`` (flags > env > file)."""
        if option.field in self.given:
            return f"--{option.flag}"
        for name in (option.env, *option.env_aliases):
            if os.environ.get(name):
                return name
        if option.key in self.file_values or option.env in self.file_values:
            return f"{self.file}"
        return "default"

    def hint(self, option: ConfigOption) -> str:
        where = self.of(option)
        if where.startswith("--"):
            return f"'{where}'"
        if where.startswith("PREBUILDD_"):
            return f"{where} (--{option.flag})"
        if self.file is not None and where == str(self.file):
            return f"'{option.key}' in {self.file}"
        return f"{option.env} (--{option.flag})"


def _explain(exc: ValidationError, origins: _Origins) -> typer.BadParameter:
    """A click usage error (exit code 2) naming each bad value's flag, variable, or key and config file."""
    options = config_options()
    by_name = {o.field: o for o in options} | {o.env.lower(): o for o in options}
    by_name |= {alias.lower(): o for o in options for alias in o.env_aliases}
    problems: list[tuple[str | None, str]] = []
    for error in exc.errors():
        reason = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
        key = str(error["loc"][0]) if error["loc"] else None
        option = by_name.get(key.lower()) if key is not None else None
        if error["type"] == "extra_forbidden" and key is not None:
            close = difflib.get_close_matches(key, [o.key for o in options], n=1)
            suggestion = f" (did you mean {close[0]}?)" if close else ""
            where = f" in {origins.file}" if origins.file is not None else ""
            problems.append((f"'{key}'{where}", f"not an option of prebuildd server{suggestion}"))
        elif option is None:
            problems.append((None, reason))
        else:
            problems.append((origins.hint(option), reason))
    (hint, reason), *more = problems
    lines = [reason, *(f"Invalid value for {h}: {r}" if h else f"Invalid value: {r}" for h, r in more)]
    return typer.BadParameter("\n".join(lines), param_hint=hint)


def config_file(explicit: Path | None) -> Path | None:
    """The config file to read: ``--config`` (or PREBUILDD_CONFIG), else the default one when it exists."""
    if explicit is not None:
        return explicit
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def _origins(values: dict[str, Any], explicit: Path | None) -> _Origins:
    path = config_file(explicit)
    try:
        file_values = read_config_file(path) if path is not None else {}
    except ConfigFileError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--config'") from None
    return _Origins(_given(values), path, file_values)


def load_config(values: dict[str, Any], config: Path | None = None) -> ServerConfig:
    """The ServerConfig from the given flags over the environment over the config file over the defaults; a
    bad value is a usage error (exit code 2) naming the flag, the variable, or the key and the file."""
    origins = _origins(values, config)
    try:
        return load_server_config(origins.given, origins.file)
    except ValidationError as exc:
        raise _explain(exc, origins) from None


def print_config(values: dict[str, Any], config: Path | None = None) -> None:
    """`--print-config`: the effective configuration as a config file, secrets redacted, each value's source."""
    origins = _origins(values, config)
    loaded = load_config(values, config)
    sources = {o.field: origins.of(o) for o in config_options()}
    header = f"# prebuildd server: effective configuration (config file: {origins.file or 'none'})\n"
    typer.echo(header + render_config(loaded, sources), nl=False)


CONFIG_FILE_HELP = escape(
    f"TOML config file: keys are the options' names with underscores (http_address = ...). Flags and "
    f"variables override it. [env: {CONFIG_FILE_ENV}] [default: {DEFAULT_CONFIG_FILE}, when it exists]"
)
CONFIG_FILE_OPTION = typer.Option(
    None,
    "--config",
    envvar=CONFIG_FILE_ENV,
    help=CONFIG_FILE_HELP,
    show_default=False,
    show_envvar=False,
    metavar="FILE",
    dir_okay=False,
)
_PRINT_CONFIG_OPTION = typer.Option(
    False,
    "--print-config",
    help="Print the effective configuration (as a config file, secrets redacted) and exit.",
)


def register(app: typer.Typer) -> None:
    def server(**values: Any) -> None:
        """Run the server: HTTP API, embedded provisioner daemons and the reconciler."""
        file = values.pop("config")
        if values.pop("print_config"):
            print_config(values, file)
            return
        config = load_config(values, file)
        configure_logging(config.log_format, config.log_level, access_log=config.access_log)
        from prebuildd.server.process import Server
        from prebuildd.server.startup import StartupError

        try:
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(Server(config).run())
        except StartupError:  # already logged as the one server.start_failed line, and cleaned up
            raise typer.Exit(1) from None

    # The options come from the declaration: typer reads the signature, so it is built from the fields.
    parameters = [
        inspect.Parameter("config", KEYWORD, default=CONFIG_FILE_OPTION, annotation=Path | None),
        inspect.Parameter("print_config", KEYWORD, default=_PRINT_CONFIG_OPTION, annotation=bool),
        *(_parameter(o) for o in config_options()),
    ]
    server.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    app.command("server")(server)
