"""`prebuildd login|logout|whoami`: the saved server URL and API token the other client commands use."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from prebuildd.cli.client import (
    ORG_ENV,
    ApiClient,
    Login,
    TokenOption,
    UrlOption,
    connect,
    fail,
    forget_login,
    normalise_url,
    save_login,
)
from prebuildd.cli.output import JsonOption, note, print_fields, print_json


def _read_token(token: str | None, token_file: Path | None) -> str:
    if token and token_file:
        raise typer.BadParameter("pass either --token or --token-file, not both")
    if token_file is not None:
        try:
            text = sys.stdin.read() if str(token_file) == "-" else token_file.read_text()
        except OSError as exc:
            fail(f"cannot read the token file {token_file}: {exc}")
        token = text.strip()
        if not token:
            fail(f"the token file {token_file} is empty")
        return token
    if token:
        return token.strip()
    if sys.stdin.isatty():
        return str(typer.prompt("API token", hide_input=True)).strip()
    fail("no token: pass --token-file FILE (or - for stdin) or --token TOKEN")


def login(
    url: Annotated[str, typer.Argument(help="The server's URL, e.g. http://127.0.0.1:7080.")],
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="File holding the API token ('-': stdin). The server writes the first owner's token to "
            "<data dir>/owner-token.",
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="The API token itself (visible in the process list).")
    ] = None,
) -> None:
    """Check a token against the server and save both for the other commands (file mode 0600)."""
    secret = _read_token(token, token_file)
    server = normalise_url(url)
    chosen = os.environ.get(ORG_ENV) or None
    with ApiClient(server, secret, organization=chosen) as api:
        me = api.get("/users/me")
        orgs = api.get("/organizations")
    # Remember the organization this login acts in, so that later commands need no --org.
    org = next((o["name"] for o in orgs if o["id"] == me.get("organization")), chosen)
    path = save_login(Login(url=server, token=secret, organization=org))
    where = f" in organization {org}" if org else ""
    note(f"Logged in to {server} as {me['username']} ({me['role']}){where}; saved in {path}.")


def logout() -> None:
    """Forget the saved URL and token (the token itself stays valid: revoke it with `tokens revoke`)."""
    if forget_login():
        note("Logged out.")
    else:
        note("Not logged in.")


def whoami(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """Who the token belongs to, on which server."""
    with connect(url, token) as api:
        me = api.get("/users/me")
        if as_json:
            print_json(me)
            return
        print_fields(
            [
                ("user", me["username"]),
                ("role", me["role"]),
                ("organization", api.organization or me.get("organization")),
                ("site owner", me.get("site_owner")),
                ("email", me.get("email")),
                ("suspended", me.get("suspended")),
                ("server", api.url),
            ]
        )


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("whoami")(whoami)
