"""The Workspaces page's data: the caller's own workspaces (everyone's for template admins and owners, as
``GET /api/v1/workspaces?owner=all``) with their latest build, one workspace with its recent builds, and a build's
log after a line id for the live log fragment. A workspace or build the caller may not see is a 404, as in the
API. Log output is shown with prebuildd's own secrets masked."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from uuid import UUID

from prebuildd.api.context import Services
from prebuildd.api.lookups import organization_of, visible_build, visible_workspace
from prebuildd.dashboard.views.redact import mask_secrets
from prebuildd.domain.jobs import JobStatus
from prebuildd.domain.permissions import Action
from prebuildd.identity.users import User, may
from prebuildd.store.jobs import JobLogLine
from prebuildd.store.workspaces import BuildView, WorkspaceView
from prebuildd.workspaces.reads import build_log_lines, builds_of_workspace, list_workspaces

RECENT_BUILDS = 10
LOG_PAGE = 500
"""Lines per read of the log fragment; a longer log arrives over several polls (``active`` stays True)."""


@dataclass(frozen=True)
class WorkspacesView:
    everyone: bool
    """True when the caller sees every workspace of the organization (template admins and owners)."""
    workspaces: list[WorkspaceView]
    """By owner then name, each with its latest build."""


@dataclass(frozen=True)
class WorkspaceDetail:
    workspace: WorkspaceView
    builds: list[BuildView]
    """Newest first, at most ``RECENT_BUILDS``."""


@dataclass(frozen=True)
class LogChunk:
    build: BuildView
    lines: list[JobLogLine]
    after: int
    """The id of the last line read (the cursor of the next poll)."""
    active: bool
    """More lines may come: the build's job is still pending or running, or this read was a full page."""
    full_page: bool = False
    """This read was cut at ``LOG_PAGE`` lines: the next one should follow at once, not after a poll interval."""


def is_active(status: str) -> bool:
    return status not in _FINISHED


async def workspaces_view(services: Services, user: User) -> WorkspacesView:
    everyone = may(user, Action.WORKSPACE_ANYONES)
    organization_id = await organization_of(services, user)
    found = await list_workspaces(
        services.db, organization_id=organization_id, owner_id=None if everyone else user.id
    )
    return WorkspacesView(everyone, [_masked_workspace(w) for w in found])


async def workspace_detail(
    services: Services, user: User, workspace_id: UUID, *, builds: int = RECENT_BUILDS
) -> WorkspaceDetail:
    """One workspace and its recent builds (404 for a workspace the caller may not see)."""
    workspace = await visible_workspace(services, user, workspace_id)
    recent = (await builds_of_workspace(services.db, workspace.id))[:builds]
    return WorkspaceDetail(_masked_workspace(workspace), [_masked(b) for b in recent])


async def build_log(services: Services, user: User, build_id: UUID, *, after: int = 0) -> LogChunk:
    """The build's log lines after line ``after`` (404 for a build the caller may not see)."""
    # The status is read before the lines (as the API's log stream does): a job seen finished has all its
    # lines in the later read, so a poller that stops at ``active == False`` never misses the last ones.
    build = await visible_build(services, user, build_id)
    lines = await build_log_lines(services.db, build.job_id, after=after, limit=LOG_PAGE)
    shown = [dataclasses.replace(line, output=mask_secrets(line.output)) for line in lines]
    more = is_active(build.status) or len(lines) == LOG_PAGE
    return LogChunk(_masked(build), shown, lines[-1].id if lines else after, more, len(lines) == LOG_PAGE)


def _masked(build: BuildView) -> BuildView:
    if build.error is None:
        return build
    return dataclasses.replace(build, error=mask_secrets(build.error))


def _masked_workspace(workspace: WorkspaceView) -> WorkspaceView:
    if workspace.latest_build is None:
        return workspace
    return dataclasses.replace(workspace, latest_build=_masked(workspace.latest_build))


_FINISHED = frozenset(s.value for s in JobStatus if not s.is_active)
