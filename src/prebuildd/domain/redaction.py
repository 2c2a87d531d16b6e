"""Credentials out of what is shown or logged: the one place that knows how a URL or a log line is redacted.

``redact_url`` is for a URL prebuildd holds and shows on purpose (the effective configuration, a webhook it
posts to); ``scrub_credentials`` is the net under every log line, which hides the password of any
``scheme://user:password@host`` and the value of any ``password=``/``token=`` pair found in free text.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "REDACTED"

_CONNINFO_SECRET = re.compile(r"\b(password|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.I)
_SECRET_QUERY = {"password", "sslpassword"}
_URL_PASSWORD = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@]*):[^\s/@]*@")
_SECRET_PAIR = re.compile(
    r"\b(password|sslpassword|passwd|token|secret|api[_-]?key|access[_-]?token)=([^\s&'\"]+)", re.I
)


def redact_url(value: str, *, keep_path: bool) -> str:
    """``value`` without its secrets: the userinfo password (the user stays), and query values (all of them
    unless ``keep_path``, where only the password parameters go). With ``keep_path`` false (a webhook: its path
    is often the credential itself, as in Slack's) the path and the user are hidden too. Not a URL: a libpq
    key=value string, whose password is hidden."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:  # an unparsable port or bracket: show nothing of it but the free-text scrub
        return scrub_credentials(value)
    if not parts.scheme or not parts.netloc:
        return _CONNINFO_SECRET.sub(lambda m: f"{m.group(1)}={REDACTED}", value)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if port is not None:
        host += f":{port}"
    userinfo = ""
    if parts.username is not None:
        userinfo = parts.username if keep_path else REDACTED
        if parts.password is not None:
            userinfo += ":" + REDACTED
        userinfo += "@"
    path = parts.path if keep_path or parts.path in ("", "/") else "/" + REDACTED
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, REDACTED if not keep_path or k.lower() in _SECRET_QUERY else v) for k, v in pairs],
            safe=REDACTED,
        )
    return urlunsplit((parts.scheme, userinfo + host, path, query, REDACTED if parts.fragment else ""))


def scrub_credentials(text: str) -> str:
    """``text`` with the password of every URL in it and every ``password=…``-like value replaced."""
    if "@" in text:
        text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
    if "=" in text:
        text = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    return text
