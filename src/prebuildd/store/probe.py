"""The startup probe: can this URL be connected to at all, and if not, is it worth waiting for?

A database that is not there yet (connection refused, no route, a name that does not resolve, a server still
starting) is retried until a deadline; one that answers and refuses (a wrong password, an unknown database or
role, a malformed URL) is a misconfiguration, reported at once: waiting will not fix it.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import psycopg

from prebuildd.store.errors import StoreError, StoreUnavailable

_TRANSIENT_REFUSALS = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "too many clients already",
    "remaining connection slots are reserved",
)
_PROBE_CONNECT_TIMEOUT = 2.0
"""Each attempt's own limit: a host that drops packets answers nothing, so an attempt must not take the whole wait."""
_RETRY_PAUSE = 0.5


class DatabaseUnreachable(StoreUnavailable):
    """No PostgreSQL answered at the URL within the wait."""

    def __init__(self, cause: Exception, waited: float) -> None:
        super().__init__(cause)
        self.waited = waited
        self.reason = _reason(cause)


class DatabaseRefused(StoreError):
    """A PostgreSQL answered and refused the connection (credentials, database name)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(cause)
        self.reason = _reason(cause)


class DatabaseUrlInvalid(StoreError):
    """The URL is not one libpq can read. Its words are not repeated: they quote the URL, password and all."""


def _reason(exc: Exception) -> str:
    """The server's or libpq's own words, without the "connection failed: connection to server at ..." prefix."""
    text = str(exc).strip()
    if not text:
        return f"no answer within {_PROBE_CONNECT_TIMEOUT:g} s"
    if "FATAL:" in text:
        return text.split("FATAL:", 1)[1].strip()
    text = text.removeprefix("connection failed: ")
    if " failed: " in text:
        text = text.split(" failed: ", 1)[1]
    return " ".join(text.split())


def where(url: str) -> str:
    """``host:port/database`` of a URL, for messages: never its password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "(unparsable URL)"
    database = parts.path.lstrip("/") or (parts.username or "")
    return f"{host}:{port}/{database}"


def _refusal(exc: psycopg.Error) -> bool:
    """The server answered and said no for a reason that waiting will not change."""
    text = str(exc)
    return "FATAL:" in text and not any(words in text for words in _TRANSIENT_REFUSALS)


async def wait_for_database(url: str, wait: float) -> None:
    """Return once a connection to ``url`` succeeds; raise :class:`DatabaseRefused` at once when the server
    refuses it, :class:`DatabaseUrlInvalid` when it is no URL, :class:`DatabaseUnreachable` when nothing
    answered for ``wait`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        remaining = deadline - loop.time()
        try:
            async with asyncio.timeout(max(min(remaining, _PROBE_CONNECT_TIMEOUT + 1), 0.1)):
                conn = await psycopg.AsyncConnection.connect(
                    url, connect_timeout=max(1, round(_PROBE_CONNECT_TIMEOUT))
                )
        except psycopg.ProgrammingError as exc:  # a malformed URL or an unknown option
            raise DatabaseUrlInvalid(exc) from None
        except psycopg.Error as exc:
            if _refusal(exc):
                raise DatabaseRefused(exc) from exc
            last: Exception = exc
        except TimeoutError as exc:
            last = exc
        else:
            await conn.close()
            return
        if loop.time() + _RETRY_PAUSE >= deadline:
            raise DatabaseUnreachable(last, wait) from last
        await asyncio.sleep(_RETRY_PAUSE)
