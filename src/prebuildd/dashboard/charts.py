"""Server-rendered SVG charts for the dashboard: a pool-size sparkline, a latency histogram with p50/p90 marks and
a week of scheduled instance counts. Pure functions returning an SVG string safe to embed as is (every text is
escaped); each chart has a <title> and an aria-label that states its content, and none relies on colour alone:
values are written as text, marks are labelled, and cells that differ from the default are hatched.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import datetime
from html import escape

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _e(text: object) -> str:
    """Escaped for both element text and attribute values."""
    return escape(str(text), quote=True)


def _num(value: float) -> str:
    """A coordinate: two decimals at most, no trailing zeros (smaller SVGs, stable output)."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _fmt(value: float) -> str:
    """A value for people: integers as such, small values with two significant decimals."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _uid(kind: str, *parts: object) -> str:
    """A deterministic id prefix, so that several charts on one page never share pattern ids by accident."""
    digest = hashlib.sha1(repr((kind, *parts)).encode()).hexdigest()[:10]
    return f"{kind}-{digest}"


def _open(width: int, height: int, title: str, summary: str, css_class: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {css_class}" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" aria-label="{_e(summary)}">'
        f"<title>{_e(title)}</title><desc>{_e(summary)}</desc>"
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# -- sparkline ---------------------------------------------------------------------------------------------


def sparkline(
    points: Sequence[tuple[datetime, int]], *, width: int = 120, height: int = 24, label: str
) -> str:
    """Pool size over time as a step line (the size holds until the next sample), with the latest value drawn as
    a dot and written in the text alternative together with the range and the minimum and maximum."""
    if not points:
        summary = f"{label}: no data"
        return (
            _open(width, height, label, summary, "sparkline sparkline-empty")
            + f'<text x="{_num(width / 2)}" y="{_num(height / 2 + 4)}" text-anchor="middle" font-size="10">'
            "no data</text></svg>"
        )
    ordered = sorted(points, key=lambda p: p[0])
    values = [v for _, v in ordered]
    low, high, last = min(values), max(values), values[-1]
    start, end = ordered[0][0], ordered[-1][0]
    pad = 2.0
    span = (end - start).total_seconds()
    top = max(high, 1)  # from zero: a pool of 3 is drawn as a third of a pool of 9, never stretched

    def x(at: datetime) -> float:
        if span <= 0:
            return width - pad
        return pad + (at - start).total_seconds() / span * (width - 2 * pad)

    def y(value: int) -> float:
        return height - pad - value / top * (height - 2 * pad)

    if len(ordered) == 1:
        path = f"M{_num(pad)},{_num(y(last))} H{_num(width - pad)}"
    else:
        steps = [f"M{_num(x(ordered[0][0]))},{_num(y(values[0]))}"]
        for at, value in ordered[1:]:
            steps.append(f"H{_num(x(at))} V{_num(y(value))}")
        path = " ".join(steps)
    summary = (
        f"{label}: now {last}, lowest {low}, highest {high}, "
        f"{len(ordered)} sample{'s' if len(ordered) != 1 else ''} from {start:%Y-%m-%d %H:%M} "
        f"to {end:%Y-%m-%d %H:%M} UTC"
    )
    return (
        _open(width, height, label, summary, "sparkline")
        + f'<path d="{path}" fill="none" stroke="currentColor" stroke-width="1.5"/>'
        + f'<circle cx="{_num(x(end) if span > 0 else width - pad)}" cy="{_num(y(last))}" r="2" '
        'fill="currentColor"/></svg>'
    )


# -- histogram ---------------------------------------------------------------------------------------------


def histogram(
    values: Sequence[float], *, unit: str, label: str, bins: int = 12, width: int = 360, height: int = 120
) -> str:
    """The distribution of ``values`` in ``bins`` equal-width bars (hatched, each with its range and count as a
    tooltip), the p50 and p90 as labelled vertical marks (solid and dashed), and the axis ends as text."""
    if not values:
        summary = f"{label}: no data"
        return (
            _open(width, height, label, summary, "histogram histogram-empty")
            + f'<text x="{_num(width / 2)}" y="{_num(height / 2)}" text-anchor="middle" font-size="12">'
            "no data</text></svg>"
        )
    bins = max(1, bins)
    low, high = min(values), max(values)
    p50, p90 = percentile(values, 0.5), percentile(values, 0.9)
    spread = high - low
    if spread <= 0:  # every value equal: one bar centred on it
        half = abs(low) * 0.1 or 0.5
        bins, lo_edge, hi_edge = 1, low - half, high + half
    else:
        lo_edge, hi_edge = low, high
    step = (hi_edge - lo_edge) / bins
    counts = [0] * bins
    for v in values:
        index = min(int((v - lo_edge) / step), bins - 1) if step > 0 else 0
        counts[max(index, 0)] += 1
    tallest = max(counts)
    left, right, top, bottom = 8.0, 8.0, 22.0, 18.0
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(value: float) -> float:
        return left + (value - lo_edge) / (hi_edge - lo_edge) * plot_w

    uid = _uid("hist", label, unit, tuple(values), bins)
    parts = [
        _open(
            width,
            height,
            label,
            f"{label}: {len(values)} value{'s' if len(values) != 1 else ''}, p50 {_fmt(p50)} {unit}, "
            f"p90 {_fmt(p90)} {unit}, from {_fmt(low)} to {_fmt(high)} {unit}",
            "histogram",
        ),
        f'<defs><pattern id="{uid}-hatch" width="4" height="4" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="4" height="4" fill="currentColor" fill-opacity="0.25"/>'
        '<line x1="0" y1="0" x2="0" y2="4" stroke="currentColor" stroke-width="1.5"/></pattern></defs>',
    ]
    bar_w = plot_w / bins
    for i, count in enumerate(counts):
        if not count:
            continue
        h = count / tallest * plot_h
        start, end = lo_edge + i * step, lo_edge + (i + 1) * step
        parts.append(
            f'<rect class="bar" x="{_num(left + i * bar_w + 0.5)}" y="{_num(top + plot_h - h)}" '
            f'width="{_num(max(bar_w - 1, 0.5))}" height="{_num(h)}" fill="url(#{uid}-hatch)" '
            f'stroke="currentColor" stroke-width="0.5"><title>{_e(_fmt(start))}–{_e(_fmt(end))} {_e(unit)}: '
            f"{count}</title></rect>"
        )
    base = top + plot_h
    parts.append(
        f'<line x1="{_num(left)}" y1="{_num(base)}" x2="{_num(width - right)}" y2="{_num(base)}" '
        'stroke="currentColor" stroke-width="1"/>'
    )
    for name, value, dash, anchor_y in (
        ("p50", p50, "", 10.0),
        ("p90", p90, ' stroke-dasharray="4 3"', 20.0),
    ):
        mx = x(value)
        anchor = "start" if mx < width / 2 else "end"
        tx = mx + 3 if anchor == "start" else mx - 3
        parts.append(
            f'<line class="mark mark-{name}" x1="{_num(mx)}" y1="{_num(top - 2)}" x2="{_num(mx)}" '
            f'y2="{_num(base)}" stroke="currentColor" stroke-width="1.5"{dash}/>'
            f'<text class="mark-label" x="{_num(tx)}" y="{_num(anchor_y)}" text-anchor="{anchor}" '
            f'font-size="10">{name} {_e(_fmt(value))} {_e(unit)}</text>'
        )
    parts.append(
        f'<text x="{_num(left)}" y="{_num(height - 4)}" font-size="10">{_e(_fmt(low))} {_e(unit)}</text>'
        f'<text x="{_num(width - right)}" y="{_num(height - 4)}" text-anchor="end" font-size="10">'
        f"{_e(_fmt(high))} {_e(unit)}</text></svg>"
    )
    return "".join(parts)


# -- week schedule -----------------------------------------------------------------------------------------


def week_cells(slots: Sequence[tuple[int, int, int, int]], *, default: int) -> list[list[int]]:
    """The instance count of each hour of the week, ``cells[weekday][hour]``: ``default`` where no slot applies,
    else the slot's count (a later slot wins where slots overlap, as in the schedule's own order)."""
    cells = [[default] * 24 for _ in range(7)]
    for weekday, start, end, instances in slots:
        if not 0 <= weekday < 7:
            raise ValueError(f"weekday {weekday} is not 0 (Monday) to 6 (Sunday)")
        for hour in range(max(start, 0), min(end, 24)):
            cells[weekday][hour] = instances
    return cells


def week_schedule(slots: Sequence[tuple[int, int, int, int]], *, default: int, label: str) -> str:
    """A 7x24 grid, one row per weekday and one cell per hour, the instance count written in every cell; hours
    whose count differs from ``default`` are hatched and bold, so the schedule reads without colour."""
    cells = week_cells(slots, default=default)
    cell_w, cell_h, left, top = 22, 18, 34, 16
    width, height = left + 24 * cell_w + 2, top + 7 * cell_h + 2
    uid = _uid("week", label, default, tuple(slots))
    scheduled = sorted(
        {(weekday, start, end, n) for weekday, start, end, n in slots if 0 <= weekday < 7 and start < end}
    )
    described = "; ".join(f"{WEEKDAYS[d]} {s:02d}:00–{e:02d}:00 {n}" for d, s, e, n in scheduled)
    summary = f"{label}: {default} instance{'s' if default != 1 else ''} by default" + (
        f"; scheduled: {described}" if described else "; no scheduled changes"
    )
    parts = [
        _open(width, height, label, summary, "week-schedule"),
        f'<defs><pattern id="{uid}-hatch" width="5" height="5" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="5" height="5" fill="currentColor" fill-opacity="0.12"/>'
        '<line x1="0" y1="0" x2="0" y2="5" stroke="currentColor" stroke-opacity="0.45" stroke-width="1.5"/>'
        "</pattern></defs>",
    ]
    for hour in range(0, 24, 3):
        parts.append(
            f'<text x="{left + hour * cell_w + cell_w / 2:g}" y="11" text-anchor="middle" font-size="9">'
            f"{hour:02d}</text>"
        )
    for day, row in enumerate(cells):
        y = top + day * cell_h
        parts.append(f'<text x="2" y="{y + cell_h - 5}" font-size="10">{WEEKDAYS[day]}</text>')
        for hour, count in enumerate(row):
            x = left + hour * cell_w
            changed = count != default
            fill = f"url(#{uid}-hatch)" if changed else "none"
            bold = ' font-weight="bold"' if changed else ""
            parts.append(
                f'<g class="cell{" scheduled" if changed else ""}"><title>{WEEKDAYS[day]} {hour:02d}:00: '
                f"{count}</title>"
                f'<rect x="{x}" y="{y}" width="{cell_w}" height="{cell_h}" fill="{fill}" stroke="currentColor" '
                'stroke-opacity="0.3" stroke-width="0.5"/>'
                f'<text x="{x + cell_w / 2:g}" y="{y + cell_h - 5}" text-anchor="middle" font-size="9"'
                f"{bold}>{count}</text></g>"
            )
    parts.append("</svg>")
    return "".join(parts)
