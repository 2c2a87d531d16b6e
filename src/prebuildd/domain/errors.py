"""The one error model: every refusal prebuildd raises is a ``PrebuilddError`` with a stable ``code``.

The code says what kind of refusal it is (a client can branch on it); the HTTP status of each code is in one
table, ``HTTP_STATUS``, which the API maps and the builder's failure classification reads. A refusal whose code is
transient (the import is still running, another build is active, the store failed) may succeed on retry; every
other one is a configuration problem until the template changes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    """The request is malformed: a field is missing, of the wrong type or out of range."""
    INVALID_PARAMETER = "invalid_parameter"
    """A parameter value, a pool setting or a schedule is not acceptable, or the version cannot be used."""
    INVALID_MANIFEST = "invalid_manifest"
    """The pushed template's manifest is invalid (``detail`` names the file, key and reason)."""
    UNAUTHENTICATED = "unauthenticated"
    """No credentials, or they are unknown, expired or revoked."""
    FORBIDDEN = "forbidden"
    """The caller is known but its role does not allow this."""
    NOT_FOUND = "not_found"
    """The thing does not exist, or the caller may not see it."""
    NOT_ACCEPTABLE = "not_acceptable"
    """The caller asked for a representation the endpoint does not serve."""
    IMPORT_PENDING = "import_pending"
    """The template version's import has not finished yet."""
    CONFLICT = "conflict"
    """The state forbids it now: an active build, a name taken, a job already finished."""
    TOO_LARGE = "too_large"
    """The request body is larger than the server accepts."""
    DATABASE_UNAVAILABLE = "database_unavailable"
    """The database is unreachable (or did not answer in time); retry in a few seconds."""
    NOT_READY = "not_ready"
    """Readiness only (``/readyz``): a part this replica is configured to run is not working."""
    INTERNAL = "internal"
    """prebuildd failed; the log has the details."""


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.INVALID_PARAMETER: 400,
    ErrorCode.INVALID_MANIFEST: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.NOT_ACCEPTABLE: 406,
    ErrorCode.IMPORT_PENDING: 406,
    ErrorCode.CONFLICT: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.DATABASE_UNAVAILABLE: 503,
    ErrorCode.NOT_READY: 503,
    ErrorCode.INTERNAL: 500,
}

_TRANSIENT = frozenset(
    {
        ErrorCode.IMPORT_PENDING,
        ErrorCode.CONFLICT,
        ErrorCode.DATABASE_UNAVAILABLE,
        ErrorCode.NOT_READY,
        ErrorCode.INTERNAL,
    }
)

# The builder's vocabulary, kept as names because its callers read well with them.
BAD_REQUEST = ErrorCode.INVALID_PARAMETER
FORBIDDEN = ErrorCode.FORBIDDEN
NOT_FOUND = ErrorCode.NOT_FOUND
NOT_ACCEPTABLE = ErrorCode.IMPORT_PENDING
CONFLICT = ErrorCode.CONFLICT
INTERNAL = ErrorCode.INTERNAL


class PrebuilddError(Exception):
    """A refusal with a ``code``, a ``message`` that says what was wrong and what to do, and optional ``detail``
    (JSON-able: field problems, the manifest key, whether a retry may help)."""

    def __init__(self, code: ErrorCode, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail

    @property
    def status(self) -> int:
        """The HTTP status of the code (the API answers with it; the failure maths classify by it)."""
        return HTTP_STATUS[self.code]

    @property
    def is_transient(self) -> bool:
        """Import pending, conflict and server faults may succeed on retry; every other refusal is permanent
        until the template changes."""
        return self.code in _TRANSIENT

    @property
    def is_config_error(self) -> bool:
        return not self.is_transient

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value}, {self.message!r})"


class BuildError(PrebuilddError):
    """The builder refused to create a build (its ``detail`` says whether a retry may help)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(code, message, {"transient": code in _TRANSIENT})


def not_found(what: str) -> PrebuilddError:
    return PrebuilddError(ErrorCode.NOT_FOUND, f"{what} not found")


def forbidden(message: str) -> PrebuilddError:
    return PrebuilddError(ErrorCode.FORBIDDEN, message)
