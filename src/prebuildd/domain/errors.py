"""Errors of the workspace builder, classified by HTTP-like status into config and transient failures."""

from __future__ import annotations

BAD_REQUEST = 400
FORBIDDEN = 403
NOT_FOUND = 404
NOT_ACCEPTABLE = 406
CONFLICT = 409
INTERNAL = 500


class BuildError(Exception):
    """The builder refused to create a build.

    ``status`` follows HTTP: 400 for bad input or an unusable version, 404 for something missing,
    406 when the version's import has not finished, 409 when the workspace already has an active build,
    500 when the store failed.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def is_transient(self) -> bool:
        """406, 409 and 5xx may succeed on retry; every other 4xx is permanent until the template changes."""
        return is_transient_status(self.status)

    @property
    def is_config_error(self) -> bool:
        return not self.is_transient

    def __repr__(self) -> str:
        return f"BuildError({self.status}, {self.message!r})"


def is_transient_status(status: int) -> bool:
    return status in (NOT_ACCEPTABLE, CONFLICT) or status >= 500
