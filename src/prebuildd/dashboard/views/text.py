"""How the Workspaces, Queue, Templates and Audit pages write times, ages, ids and statuses: words and marks
that read without colour (a status is a word with a symbol; colour only repeats it)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from prebuildd.domain.words import plural

# A status word, the mark shown before it, and the CSS class that colours it (colour repeats the word).
_STATUS = {
    "pending": ("…", "wait"),
    "running": ("▶", "busy"),
    "canceling": ("■", "busy"),
    "succeeded": ("✓", "ok"),
    "canceled": ("–", "off"),
    "failed": ("✗", "bad"),
    "ok": ("✓", "ok"),
    "denied": ("⊘", "bad"),
    "invalid": ("!", "warn"),
    "conflict": ("!", "warn"),
    "error": ("✗", "bad"),
}


def age(seconds: float | None) -> str:
    """A duration in the two largest units: '45s', '3m 05s', '2h 10m', '3d 4h'; '–' for None."""
    if seconds is None:
        return "–"
    s = int(max(seconds, 0))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{s}s"


def ago(when: datetime | None, now: datetime) -> str:
    """'3m 05s ago' (or '–')."""
    if when is None:
        return "–"
    return f"{age((now - when).total_seconds())} ago"


def stamp(when: datetime | None) -> str:
    """A UTC time to the second, the form the API and the CLI use: '2026-01-05 09:00:00Z'."""
    if when is None:
        return "–"
    if when.tzinfo is None:  # the store's times are aware; a naive one is taken as UTC already
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def iso(when: datetime | None) -> str:
    """The machine-readable time of a ``<time datetime=…>`` element."""
    return "" if when is None else when.isoformat()


def short_id(value: UUID | str | None) -> str:
    """The first 8 characters of an id, enough to tell jobs apart on a page (the full id is in its title)."""
    return "–" if value is None else str(value)[:8]


def status_mark(status: str | None) -> str:
    return _STATUS.get(status or "", ("?", "off"))[0]


def status_class(status: str | None) -> str:
    return "status-" + _STATUS.get(status or "", ("?", "off"))[1]


HELPERS = {
    "age": age,
    "ago": ago,
    "stamp": stamp,
    "iso": iso,
    "short_id": short_id,
    "status_mark": status_mark,
    "status_class": status_class,
    "plural": plural,
}
"""What the page templates call (passed in each page's context, so they do not depend on the app's filters)."""
