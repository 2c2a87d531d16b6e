"""Flag parsing and logging set-up shared by the commands that run long-lived processes (`server`, `provisioner
start`).

Its own module so that the standalone daemon's command need not import `server_command`, which reaches the whole
server (and the database driver) through its lazy import of the server's composition.
"""

from __future__ import annotations

import logging
import sys

import structlog
import typer

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


def configure_logging(log_format: str, level: str) -> None:
    """Structured logs on stderr, as console text or JSON lines."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise typer.BadParameter(f"unknown log level {level!r}: use debug, info, warning or error")
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if log_format == "json" else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
