"""Finding a workspace from what a user types: its id, its name (own workspaces) or ``owner/name``."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prebuildd.cli.client import ApiClient, fail, quote


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


def find_workspace(api: ApiClient, ref: str) -> dict[str, Any]:
    """The workspace ``ref`` names; exits with a hint when there is none.

    ``ref`` is a workspace id, the name of one of the caller's workspaces, or ``owner/name`` (another user's
    workspace: template admins and owners only; the server refuses members).
    """
    if _is_uuid(ref):
        return dict(api.get(f"/workspaces/{quote(ref)}"))
    owner, slash, name = ref.rpartition("/")
    if slash and not (owner and name):
        fail(f"workspace {ref!r}: expected NAME or OWNER/NAME")
    found = [
        workspace
        for workspace in api.get("/workspaces", {"name": name, "owner": owner if slash else "me"})
        if workspace.get("name") == name
    ]
    if not found:
        whose = f"owned by {owner}" if slash else "of yours"
        fail(f"no workspace named {name!r} {whose}; see `prebuildd workspaces list`")
    return dict(found[0])
