"""The store's errors: every psycopg error that leaves the store is one of these, so services never handle the
driver's exceptions (the original stays the ``__cause__``).

``StoreConflict`` is a unique constraint (its name says which); ``StoreTimeout`` a statement canceled by a timeout
(statement_timeout, or a lock not granted within lock_timeout);
``StoreUnavailable`` a database that cannot be reached; ``StoreError`` any other database failure.
"""

from __future__ import annotations

import psycopg

from prebuildd.domain.errors import ErrorCode, PrebuilddError


class StoreError(PrebuilddError):
    """The database refused or failed a statement."""

    def __init__(self, cause: Exception, code: ErrorCode = ErrorCode.INTERNAL, message: str = "") -> None:
        super().__init__(code, message or f"database error: {cause}", {"cause": type(cause).__name__})


class StoreConflict(StoreError):
    """A unique constraint refused the write; ``constraint`` names it."""

    def __init__(self, cause: psycopg.errors.UniqueViolation) -> None:
        self.constraint = cause.diag.constraint_name or ""
        primary = cause.diag.message_primary or str(cause)
        super().__init__(cause, ErrorCode.CONFLICT, f"conflict: {primary}")


class StoreTimeout(StoreError):
    """A statement ran past its timeout and was canceled."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(cause, ErrorCode.DATABASE_UNAVAILABLE, "the database did not answer in time; retry")


class StoreUnavailable(StoreError):
    """The database cannot be reached: no connection within the pool timeout, or the connection broke."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(
            cause, ErrorCode.DATABASE_UNAVAILABLE, "the database is unavailable; retry in a few seconds"
        )


def store_error(exc: psycopg.Error, *, broken: bool = False) -> StoreError:
    """The project's error for ``exc``; ``broken`` when the connection it came from is no longer usable."""
    if broken:
        return StoreUnavailable(exc)
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return StoreConflict(exc)
    if isinstance(exc, (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable)):  # a lock_timeout too
        return StoreTimeout(exc)
    return StoreError(exc)
