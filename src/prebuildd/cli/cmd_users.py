"""`prebuildd users …` (list, create, set-role, suspend) and `prebuildd tokens …` (list, create, revoke)."""

from __future__ import annotations

from typing import Annotated

import typer

from prebuildd.cli.client import TokenOption, UrlOption, connect, quote
from prebuildd.cli.output import JsonOption, age, note, print_json, print_table
from prebuildd.domain.durations import parse_duration

users_app = typer.Typer(name="users", help="Users and their roles (owner).", no_args_is_help=True)
tokens_app = typer.Typer(name="tokens", help="API tokens.", no_args_is_help=True)

ROLES = ("owner", "template-admin", "member")
UsernameArgument = Annotated[str, typer.Argument(help="The user's name.", show_default=False)]


def _role(value: str) -> str:
    if value not in ROLES:
        raise typer.BadParameter(f"{value!r}: expected one of {', '.join(ROLES)}")
    return value


@users_app.command("list")
def list_users(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """Every user of the organization."""
    with connect(url, token) as api:
        users = api.get("/users")
    if as_json:
        print_json(users)
        return
    print_table(
        ["USERNAME", "ROLE", "EMAIL", "SUSPENDED", "CREATED"],
        (
            [u["username"], u.get("role"), u.get("email"), u.get("suspended"), age(u.get("created_at"))]
            for u in users
        ),
    )


@users_app.command("create")
def create_user(
    username: UsernameArgument,
    role: Annotated[
        str, typer.Option("--role", help="owner, template-admin or member.", callback=_role)
    ] = "member",
    email: Annotated[str | None, typer.Option("--email", help="The user's email address.")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create a user; give them a token with `prebuildd tokens create NAME --user USERNAME`."""
    body = {"username": username, "role": role} | ({"email": email} if email else {})
    with connect(url, token) as api:
        user = api.post("/users", body)
    if as_json:
        print_json(user)
        return
    note(f"Created user {user['username']} ({user['role']}).")


@users_app.command("set-role")
def set_role(
    username: UsernameArgument,
    role: Annotated[
        str, typer.Argument(help="owner, template-admin or member.", callback=_role, show_default=False)
    ],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Change a user's role."""
    with connect(url, token) as api:
        user = api.patch(f"/users/{quote(username)}", {"role": role})
    note(f"{user['username']} is now {user['role']}.")


@users_app.command("suspend")
def suspend(
    username: UsernameArgument,
    undo: Annotated[bool, typer.Option("--undo", help="Lift the suspension.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Suspend a user (their tokens stop working), or lift that with --undo."""
    with connect(url, token) as api:
        user = api.patch(f"/users/{quote(username)}", {"suspended": not undo})
    note(f"{user['username']} is {'suspended' if user.get('suspended') else 'active'}.")


@tokens_app.command("list")
def list_tokens(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """Your API tokens (never their secrets)."""
    with connect(url, token) as api:
        tokens = api.get("/tokens")
    if as_json:
        print_json(tokens)
        return
    print_table(
        ["ID", "NAME", "CREATED", "EXPIRES", "USED", "REVOKED"],
        (
            [
                t["id"],
                t.get("name"),
                age(t.get("created_at")),
                age(t.get("expires_at")),
                age(t.get("last_used_at")),
                age(t.get("revoked_at")) if t.get("revoked_at") else "-",
            ]
            for t in tokens
        ),
    )


@tokens_app.command("create")
def create_token(
    name: Annotated[str, typer.Argument(help="What the token is for.", show_default=False)],
    lifetime: Annotated[
        str | None, typer.Option("--lifetime", help="How long it stays valid, e.g. 30d or 12h.")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="Create it for this user (owner).")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create an API token; its secret is printed once on stdout, so store it now."""
    body: dict[str, object] = {"name": name}
    if lifetime is not None:
        try:
            body["lifetime_seconds"] = round(parse_duration(lifetime))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--lifetime") from exc
    if user:
        body["username"] = user
    with connect(url, token) as api:
        created = api.post("/tokens", body)
    if as_json:
        print_json(created)
        return
    info = created["token"]
    expires = f", expires {info['expires_at']}" if info.get("expires_at") else ""
    note(f"Created token {info['name']} (id {info['id']}{expires}). The secret below is shown only once.")
    print(created["secret"], flush=True)


@tokens_app.command("revoke")
def revoke(
    token_id: Annotated[
        str, typer.Argument(help="The token's id (see `tokens list`).", show_default=False, metavar="ID")
    ],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Revoke a token: requests with it are refused from now on."""
    with connect(url, token) as api:
        api.delete(f"/tokens/{quote(token_id)}")
    note(f"Revoked token {token_id}.")
