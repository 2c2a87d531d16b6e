"""Human durations (`500ms`, `30s`, `1h30m`) to seconds and back."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a sum of number+unit parts (ms, s, m, h, d), or a bare number of seconds."""
    value = text.strip().lower()
    if not value:
        raise ValueError("empty duration: expected a value like 30s, 5m or 1h")
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds < 0:
            raise ValueError(f"duration {text!r} is negative")
        return seconds
    pos = 0
    total = 0.0
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(value) or pos == 0:
        raise ValueError(f"invalid duration {text!r}: expected a value like 500ms, 30s, 5m, 1h or 1h30m")
    return total


def format_duration(seconds: float) -> str:
    """The shortest readable form: 90 -> '1m30s', 0.5 -> '500ms'."""
    if seconds < 1 and seconds > 0:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(parts) or "0s"
