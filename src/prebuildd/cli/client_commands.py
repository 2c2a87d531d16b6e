"""Client commands: every one a client of the HTTP API (see `prebuildd.cli.client`).

`login`/`logout`/`whoami` (cmd_auth), `templates` (cmd_templates), `presets` (cmd_presets), `workspaces`
(cmd_workspaces), `orgs` (cmd_orgs, registered lazily by the root group), `users` and `tokens` (cmd_users), `jobs`
(cmd_jobs).
"""

from __future__ import annotations

import typer

from prebuildd.cli import cmd_auth
from prebuildd.cli.cmd_jobs import jobs_app
from prebuildd.cli.cmd_presets import presets_app
from prebuildd.cli.cmd_templates import templates_app
from prebuildd.cli.cmd_users import tokens_app, users_app
from prebuildd.cli.cmd_workspaces import workspaces_app


def register(app: typer.Typer) -> None:
    cmd_auth.register(app)
    for sub_app in (templates_app, presets_app, workspaces_app, users_app, tokens_app, jobs_app):
        app.add_typer(sub_app)
