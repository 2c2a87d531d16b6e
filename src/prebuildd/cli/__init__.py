"""The `prebuildd` command: the server, and a client of the HTTP API for every operation."""

from __future__ import annotations

import typer

from prebuildd.cli import agent_command, client_commands, provisioner_commands, server_command
from prebuildd.cli.cmd_prebuilds import prebuilds_app

app = typer.Typer(
    name="prebuildd",
    help="Warm pools of prebuilt workspaces.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root() -> None:
    """prebuildd: warm pools of prebuilt workspaces."""


server_command.register(app)
client_commands.register(app)
provisioner_commands.register(app)
agent_command.register(app)
app.add_typer(prebuilds_app)


def main() -> None:
    app()
