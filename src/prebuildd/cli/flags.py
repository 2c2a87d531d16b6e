"""Flag parsing and logging set-up shared by the commands that run long-lived processes (`server`, `provisioner
start`).

Its own module so that the standalone daemon's command need not import `server_command`, which reaches the whole
server (and the database driver) through its lazy import of the server's composition.
"""

from __future__ import annotations

import typer

from prebuildd.cli import logs
from prebuildd.domain.durations import parse_duration
from prebuildd.runtime import config


def parse_duration_flag(value: str) -> float:
    """A duration flag (``10s``, ``5m``) in seconds; a bad one is a usage error."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def parse_tags(values: list[str]) -> dict[str, str]:
    """Repeated ``--tag KEY=VALUE`` flags as a mapping, parsed as the server's own tags are."""
    try:
        return config.parse_tags(values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def configure_logging(log_format: str, level: str, *, access_log: bool = False) -> None:
    """Every log line of this process on stderr, as console text or JSON lines (`prebuildd.cli.logs`); a bad
    level is a usage error."""
    try:
        logs.configure_logging(log_format, level, access_log=access_log)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
