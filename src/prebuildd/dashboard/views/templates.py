"""The Templates page's data: the organization's templates with their versions (import status, warnings, and the
import error), and a version's import log. As the API: the import error and the import log are script output,
shown to template admins and owners only (``outputs.read``); members see that an import failed, not why."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from prebuildd.api.context import Services
from prebuildd.dashboard.views.redact import mask_secrets
from prebuildd.domain.jobs import JobStatus
from prebuildd.domain.permissions import Action
from prebuildd.identity.users import User, may, require
from prebuildd.store.jobs import JobLogLine
from prebuildd.store.templates import Template, TemplateVersion
from prebuildd.templates import catalog

HIDDEN_ERROR = "import failed (the error is shown to template-admins)"
LOG_LINES = 2000
VERSIONS = 20
"""Versions listed per template, newest first (the CLI lists them all)."""


@dataclass(frozen=True)
class VersionRow:
    version: TemplateVersion
    import_error: str | None
    """The version's import error as the caller may see it (``HIDDEN_ERROR`` for members)."""
    warnings: list[str]


@dataclass(frozen=True)
class TemplateRow:
    template: Template
    versions: list[VersionRow]
    """Newest first, at most ``VERSIONS``."""
    more_versions: int
    """Older versions not listed."""


@dataclass(frozen=True)
class TemplatesView:
    rows: list[TemplateRow]
    sees_outputs: bool
    """The caller may read import errors and logs."""


@dataclass(frozen=True)
class ImportLog:
    template: str
    version: TemplateVersion
    lines: list[JobLogLine]
    after: int
    """The id of the last line read."""
    active: bool
    """The import is still running (or this read was a full page): more lines may come."""
    full_page: bool = False
    """This read was cut at ``LOG_LINES`` lines: the next one should follow at once."""


def _version_row(user: User, version: TemplateVersion) -> VersionRow:
    error = version.import_error
    if error is not None:
        error = mask_secrets(error) if may(user, Action.OUTPUTS_READ) else HIDDEN_ERROR
    return VersionRow(version, error, list(version.warnings or []))


async def templates_view(services: Services, user: User) -> TemplatesView:
    rows = []
    for template in await catalog.list_templates(services.db, user):
        versions = await catalog.list_versions(services.db, user, template.name)
        shown = [_version_row(user, v) for v in versions[:VERSIONS]]
        rows.append(TemplateRow(template, shown, max(len(versions) - VERSIONS, 0)))
    return TemplatesView(rows, may(user, Action.OUTPUTS_READ))


async def import_log(
    services: Services, user: User, template: str, version: str, *, after: int = 0
) -> ImportLog:
    """The log of the version's import job after line ``after`` (403 for members, 404 for a template or version
    the caller's organization does not have)."""
    require(user, Action.OUTPUTS_READ)
    found, _parameters = await catalog.get_version(services.db, user, template, version)
    # The status before the lines, as for build logs: a finished import has all its lines in the later read.
    lines = await services.queue.logs(found.job_id, after=after, limit=LOG_LINES)
    shown = [dataclasses.replace(line, output=mask_secrets(line.output)) for line in lines]
    active = JobStatus(found.import_status).is_active or len(lines) == LOG_LINES
    if found.import_error is not None:
        found = dataclasses.replace(found, import_error=mask_secrets(found.import_error))
    return ImportLog(
        template, found, shown, lines[-1].id if lines else after, active, len(lines) == LOG_LINES
    )
