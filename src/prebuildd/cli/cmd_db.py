"""`prebuildd db migrate|status`: the schema of the server's database, on purpose (upgrades with --no-migrate).

The database is the server's: ``--postgres-url``, else the embedded PostgreSQL of ``--data-dir`` (started for the
command when no server has it running), with the same config file and variables as `prebuildd server`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from prebuildd.cli.flags import configure_logging
from prebuildd.cli.server_command import CONFIG_FILE_HELP, load_config
from prebuildd.runtime.config import CONFIG_FILE_ENV, ServerConfig

db_app = typer.Typer(
    name="db",
    help="The server's database schema: migrate on purpose, or see where it is.",
    no_args_is_help=True,
)

PostgresUrlOption = Annotated[
    str | None,
    typer.Option(
        "--postgres-url",
        help="The server's PostgreSQL URL [env: PREBUILDD_POSTGRES_URL]. Absent: the embedded one of --data-dir.",
        show_default=False,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="The server's data directory [env: PREBUILDD_DATA_DIR].", show_default=False
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar=CONFIG_FILE_ENV,
        help=CONFIG_FILE_HELP,
        show_envvar=False,
        metavar="FILE",
        dir_okay=False,
    ),
]
LogFormatOption = Annotated[
    str, typer.Option("--log-format", help="Log format of the warnings: console or json.")
]


def _config(
    postgres_url: str | None, data_dir: Path | None, config: Path | None, log_format: str
) -> ServerConfig:
    values: dict[str, Any] = {"postgres_url": postgres_url, "data_dir": data_dir}
    loaded = load_config(values, config)
    configure_logging(log_format, "warning")
    return loaded


def _fail(exc: Exception) -> typer.Exit:
    from prebuildd.server.startup import StartupError

    if isinstance(exc, StartupError):
        typer.echo(f"error: {exc.message}\n  {exc.hint}", err=True)
        return typer.Exit(1)
    raise exc


@db_app.command("migrate")
def migrate(
    postgres_url: PostgresUrlOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    log_format: LogFormatOption = "console",
) -> None:
    """Apply every pending migration (forward-only; safe beside running servers, which it waits for)."""
    from prebuildd.server.schema import migrate_database

    settings = _config(postgres_url, data_dir, config, log_format)
    try:
        report = asyncio.run(migrate_database(settings))
    except Exception as exc:
        raise _fail(exc) from None
    if report.applied:
        typer.echo(
            f"applied migrations {', '.join(map(str, report.applied))}: the schema is at version "
            f"{report.after.version} (was {report.before.version})"
        )
    else:
        typer.echo(
            f"nothing to do: the schema is at version {report.after.version}, the latest this prebuildd knows"
        )


@db_app.command("status")
def status(
    postgres_url: PostgresUrlOption = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    log_format: LogFormatOption = "console",
) -> None:
    """Where the schema is against this prebuildd's migrations; exit 1 when migrations are pending (or the
    schema is newer than this prebuildd)."""
    from prebuildd.server.schema import database_schema

    settings = _config(postgres_url, data_dir, config, log_format)
    try:
        state = asyncio.run(database_schema(settings))
    except Exception as exc:
        raise _fail(exc) from None
    typer.echo(f"schema version: {state.version}; this prebuildd knows 1..{state.latest}")
    if state.pending:
        typer.echo(f"pending migrations: {', '.join(map(str, state.pending))} (run prebuildd db migrate)")
    if state.unknown:
        typer.echo(
            f"migrations unknown to this prebuildd: {', '.join(map(str, state.unknown))} (a newer one migrated it)"
        )
    if state.pending or state.unknown:
        raise typer.Exit(1)
    typer.echo("up to date")
