"""The audit log's vocabulary: the stable action names and how a refusal's code becomes an entry's outcome."""

from __future__ import annotations

from prebuildd.domain.errors import ErrorCode

ACTIONS = (
    "template.push",
    "template.activate",
    "template.deprecate",
    "template.undeprecate",
    "template.delete",
    "preset.set",
    "prebuilds.pause",
    "prebuilds.resume",
    "prebuilds.retry",
    "prebuilds.invalidate",
    "prebuilds.cleanup",
    "user.create",
    "user.role",
    "user.suspend",
    "user.unsuspend",
    "token.create",
    "token.revoke",
    "key.create",
    "key.revoke",
    "org.create",
    "org.rename",
    "org.delete",
    "member.add",
    "member.remove",
    "member.role",
)
"""Every action an entry may name. Names are stable (clients filter on them): add, never rename."""

OUTCOMES = ("ok", "denied", "invalid", "conflict", "error")

_OUTCOME_OF_CODE: dict[ErrorCode, str] = {
    ErrorCode.UNAUTHENTICATED: "denied",
    ErrorCode.FORBIDDEN: "denied",
    ErrorCode.INVALID_REQUEST: "invalid",
    ErrorCode.INVALID_PARAMETER: "invalid",
    ErrorCode.INVALID_MANIFEST: "invalid",
    ErrorCode.NOT_FOUND: "invalid",
    ErrorCode.NOT_ACCEPTABLE: "invalid",
    ErrorCode.TOO_LARGE: "invalid",
    ErrorCode.IMPORT_PENDING: "conflict",
    ErrorCode.CONFLICT: "conflict",
}


def outcome_of(code: ErrorCode) -> str:
    """The outcome of an action refused with ``code``: what the server could not do is an ``error``."""
    return _OUTCOME_OF_CODE.get(code, "error")
