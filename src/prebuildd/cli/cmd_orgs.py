"""`prebuildd orgs …`: organizations (create, list, show, rename, delete: the site owner), the default one
commands act in (`use`), and their members (`orgs members list|add|remove|set-role`)."""

from __future__ import annotations

from typing import Annotated

import typer

from prebuildd.cli.client import TokenOption, UrlOption, connect, fail, load_login, quote, save_login
from prebuildd.cli.output import JsonOption, age, note, print_fields, print_json, print_table

orgs_app = typer.Typer(
    name="orgs",
    help="Organizations (create, rename, delete: the site owner) and their members.",
    no_args_is_help=True,
)
members_app = typer.Typer(
    name="members",
    help="The members of the organization (--org) and their roles (owners).",
    no_args_is_help=True,
)
orgs_app.add_typer(members_app)

ROLES = ("owner", "template-admin", "member")
OrgArgument = Annotated[str, typer.Argument(help="The organization's name (or id).", show_default=False)]
UsernameArgument = Annotated[str, typer.Argument(help="The user's name.", show_default=False)]


def _role(value: str) -> str:
    if value not in ROLES:
        raise typer.BadParameter(f"{value!r}: expected one of {', '.join(ROLES)}")
    return value


RoleOption = Annotated[str, typer.Option("--role", help="owner, template-admin or member.", callback=_role)]


@orgs_app.command("list")
def list_orgs(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """Your organizations and your role in each (the site owner: every organization)."""
    with connect(url, token) as api:
        orgs = api.get("/organizations")
        current = api.organization
    if as_json:
        print_json(orgs)
        return
    print_table(
        ["NAME", "DISPLAY NAME", "ROLE", "DEFAULT", "CREATED", ""],
        (
            [
                o["name"],
                o.get("display_name"),
                o.get("role"),
                o.get("is_default"),
                age(o.get("created_at")),
                "*" if current in (o["name"], o["id"]) else "",
            ]
            for o in orgs
        ),
    )


@orgs_app.command("show")
def show(
    name: OrgArgument, as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None
) -> None:
    """One organization."""
    with connect(url, token) as api:
        org = api.get(f"/organizations/{quote(name)}")
    if as_json:
        print_json(org)
        return
    print_fields(
        [
            ("name", org["name"]),
            ("display name", org.get("display_name")),
            ("id", org["id"]),
            ("your role", org.get("role")),
            ("default", org.get("is_default")),
            ("created", org.get("created_at")),
        ]
    )


@orgs_app.command("create")
def create(
    name: OrgArgument,
    display_name: Annotated[str, typer.Option("--display-name", help="A human-readable name.")] = "",
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create an organization (site owner); add its first owner with `orgs members add USER --role owner
    --org NAME`, or create one with `users create USER --role owner --org NAME`."""
    with connect(url, token) as api:
        org = api.post("/organizations", {"name": name, "display_name": display_name})
    if as_json:
        print_json(org)
        return
    note(f"Created organization {org['name']}.")


@orgs_app.command("rename")
def rename(
    name: OrgArgument,
    new_name: Annotated[str | None, typer.Argument(help="The new name.", show_default=False)] = None,
    display_name: Annotated[str | None, typer.Option("--display-name", help="A new display name.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Rename an organization or change its display name (site owner)."""
    if new_name is None and display_name is None:
        fail("nothing to change: give a new name or --display-name")
    body = {k: v for k, v in (("name", new_name), ("display_name", display_name)) if v is not None}
    with connect(url, token) as api:
        org = api.patch(f"/organizations/{quote(name)}", body)
    note(f"Organization {org['name']} ({org.get('display_name') or 'no display name'}).")


@orgs_app.command("delete")
def delete(name: OrgArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Delete an organization (site owner); refused while it still has templates or workspaces."""
    with connect(url, token) as api:
        api.delete(f"/organizations/{quote(name)}")
    note(f"Deleted organization {name}.")


@orgs_app.command("use")
def use(name: OrgArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Make ``name`` the organization later commands act in (saved with your login)."""
    saved = load_login()
    if saved is None:
        fail("not logged in: run `prebuildd login URL --token-file FILE` first")
    with connect(url, token) as api:
        org = api.get(f"/organizations/{quote(name)}")
    save_login(type(saved)(url=saved.url, token=saved.token, organization=org["name"]))
    note(f"Commands now act in organization {org['name']} (override with --org).")


# -- members -----------------------------------------------------------------------------------------------


@members_app.command("list")
def list_members(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """The members of the organization and their roles there."""
    with connect(url, token) as api:
        members = api.get("/users")
    if as_json:
        print_json(members)
        return
    print_table(
        ["USERNAME", "ROLE", "SUSPENDED", "SITE OWNER"],
        ([m["username"], m.get("role"), m.get("suspended"), m.get("site_owner")] for m in members),
    )


@members_app.command("add")
def add_member(
    username: UsernameArgument,
    role: RoleOption = "member",
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Add an existing user to the organization (the site owner, or an owner of all their organizations)."""
    with connect(url, token) as api:
        member = api.put(f"/members/{quote(username)}", {"role": role})
    note(f"{member['username']} is a member ({member['role']}).")


@members_app.command("set-role")
def set_member_role(
    username: UsernameArgument,
    role: Annotated[str, typer.Argument(help="owner, template-admin or member.", callback=_role)],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Change a member's role in the organization."""
    with connect(url, token) as api:
        member = api.patch(f"/users/{quote(username)}", {"role": role})
    note(f"{member['username']} is now {member['role']}.")


@members_app.command("remove")
def remove_member(username: UsernameArgument, url: UrlOption = None, token: TokenOption = None) -> None:
    """Remove a member from the organization (the user stays, with their other memberships)."""
    with connect(url, token) as api:
        api.delete(f"/members/{quote(username)}")
    note(f"{username} is no longer a member.")
