"""The words and marks the Workspaces, Queue, Templates and Audit pages write: ages in two units, UTC stamps,
and a status that reads without colour (a mark and the word; the class only colours it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest

from prebuildd.dashboard.views import text


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "–"),
        (-3, "0s"),
        (45.9, "45s"),
        (185, "3m 05s"),
        (7800, "2h 10m"),
        (3 * 86400 + 4 * 3600, "3d 4h"),
    ],
)
def test_age_uses_the_two_largest_units(seconds: float | None, shown: str) -> None:
    assert text.age(seconds) == shown


def test_times_are_written_in_utc_and_ids_short() -> None:
    paris = timezone(timedelta(hours=1))
    when = datetime(2026, 1, 5, 10, 0, 0, tzinfo=paris)
    assert text.stamp(when) == "2026-01-05 09:00:00Z"
    assert text.stamp(None) == "–"
    assert text.ago(when, when + timedelta(seconds=65)) == "1m 05s ago"
    assert text.iso(datetime(2026, 1, 5, tzinfo=UTC)) == "2026-01-05T00:00:00+00:00"
    assert text.short_id(UUID("12345678-1234-4234-8234-123456789abc")) == "12345678"


def test_every_status_has_a_mark_besides_its_colour() -> None:
    for status in ("pending", "running", "succeeded", "failed", "canceled", "denied", "error"):
        assert text.status_mark(status) not in ("", "?")
        assert text.status_class(status).startswith("status-")
    assert text.status_mark("failed") != text.status_mark("succeeded")
    assert text.status_mark("unheard-of") == "?"
