"""The rules of a workspace request before it reaches the builder: whose workspace it is, which preset it names,
whose workspaces a caller may list, and what a build may carry. Routes call these; they hold no rule themselves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from prebuildd.domain.errors import ErrorCode, PrebuilddError, not_found
from prebuildd.domain.jobs import Transition
from prebuildd.domain.permissions import Action
from prebuildd.identity.users import User, may, organization_of, user_named
from prebuildd.store.claims import creation_target as store_creation_target
from prebuildd.store.db import Database
from prebuildd.store.templates import Template
from prebuildd.store.workspaces import preset_id_by_name, preset_names


async def owner_for_creation(db: Database, user: User, username: str | None) -> User:
    """Who will own a new workspace: the caller, or (template admins only) the user named; never a system user."""
    if username is None or username.lower() == user.username.lower():
        return user
    if not may(user, Action.WORKSPACE_ANYONES):
        raise PrebuilddError(ErrorCode.FORBIDDEN, "only template admins create workspaces for other users")
    # Only a member of the template's organization (the one the request acts in) may own its workspace.
    owner = await user_named(db, await organization_of(db, user), username, system_too=True)
    if owner.is_system:
        raise PrebuilddError(
            ErrorCode.INVALID_REQUEST,
            f"owner: {username} is a system user; prebuilds are created by the reconciler",
        )
    return owner


async def preset_of_template(db: Database, template: Template, preset: str | None) -> UUID | None:
    """The id of ``preset`` in the template's active version; None when no preset is asked for, or when the
    template has no active version yet (the builder then says why it cannot be used)."""
    if preset is None or template.active_version_id is None:
        return None
    async with db.transaction() as conn:
        preset_id = await preset_id_by_name(conn, template.active_version_id, preset)
        if preset_id is None:
            names = await preset_names(conn, template.active_version_id)
            raise PrebuilddError(
                ErrorCode.INVALID_REQUEST,
                f"preset: {template.name} {template.active_version} has no preset {preset!r}; "
                f"presets: {', '.join(names) or 'none'}",
            )
    return preset_id


async def listed_owner(db: Database, user: User, owner: str) -> UUID | None:
    """Whose workspaces ``owner`` (``me``, ``all`` or a username) asks for: members only their own; None is all."""
    if owner.lower() in ("me", user.username.lower()):
        return user.id
    if not may(user, Action.WORKSPACE_ANYONES):
        raise PrebuilddError(ErrorCode.FORBIDDEN, "members list only their own workspaces (owner=me)")
    if owner.lower() == "all":
        return None
    return (await user_named(db, await organization_of(db, user), owner, system_too=True)).id


def check_build_parameters(transition: Transition, parameters: Mapping[str, Any]) -> None:
    """Only a start takes new values: a stop or a delete reuses the last build's."""
    if parameters and transition is not Transition.START:
        raise PrebuilddError(
            ErrorCode.INVALID_REQUEST,
            f"parameters: a {transition} build reuses the last build's values; send none",
        )


async def creation_target(
    db: Database, organization_id: UUID, template: str, preset: str | None
) -> tuple[Template, UUID | None]:
    """The live template ``template`` and the id of ``preset`` in its active version, for a creation: one
    statement (the claim path's lookups are its latency), with the errors of ``template_named`` and
    ``preset_of_template`` (404 for the template; an unknown preset names the ones there are)."""
    async with db.autocommit() as conn:
        found = await store_creation_target(conn, organization_id, template, preset)
    if found is None:
        raise not_found(f"template {template}")
    target, preset_id = found
    if preset is not None and preset_id is None:
        return target, await preset_of_template(db, target, preset)  # raises, or None before an import
    return target, preset_id
