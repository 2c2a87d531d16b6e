"""The dashboard's SVG charts (pure): well-formed XML, escaped text, a title and a text alternative on each, empty
and one-point input, monotone scaling, and marks that read without colour."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from prebuildd.dashboard.charts import histogram, percentile, sparkline, week_cells, week_schedule

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
HOSTILE = 'big <script>alert("x")</script> & co'


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    return root


def title(root: ET.Element) -> str:
    found = root.find(f"{SVG}title")
    assert found is not None and found.text
    return found.text


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def path_ys(root: ET.Element) -> list[float]:
    """The y of every vertical step of the sparkline's path, in order (its start first)."""
    path = root.find(f"{SVG}path")
    assert path is not None
    d = path.get("d", "")
    start = re.match(r"M[\d.]+,([\d.]+)", d)
    assert start is not None
    return [float(start.group(1))] + [float(v) for v in re.findall(r"V([\d.]+)", d)]


@pytest.mark.parametrize(
    "svg",
    [
        sparkline([(T0, 1), (T0 + timedelta(hours=1), 3)], label=HOSTILE),
        sparkline([], label=HOSTILE),
        histogram([1.0, 2.0, 3.0], unit="ms <b>", label=HOSTILE),
        histogram([], unit="ms", label=HOSTILE),
        week_schedule([(0, 9, 17, 5)], default=1, label=HOSTILE),
    ],
    ids=["sparkline", "sparkline-empty", "histogram", "histogram-empty", "week"],
)
def test_every_chart_is_well_formed_escaped_and_titled(svg: str) -> None:
    assert "<script>" not in svg and "<b>" not in svg
    root = parse(svg)
    assert title(root) == HOSTILE  # escaped in the markup, the same text once parsed
    assert HOSTILE in (root.get("aria-label") or "")
    desc = root.find(f"{SVG}desc")
    assert desc is not None and desc.text == root.get("aria-label")


def test_sparkline_of_nothing_says_no_data() -> None:
    root = parse(sparkline([], label="pool"))
    assert texts(root) == ["no data"]
    assert root.get("aria-label") == "pool: no data"
    assert root.find(f"{SVG}path") is None


def test_sparkline_of_one_point_is_a_flat_line_with_its_value_in_words() -> None:
    root = parse(sparkline([(T0, 4)], label="pool"))
    ys = path_ys(root)
    assert len(ys) == 1
    assert "now 4, lowest 4, highest 4, 1 sample" in (root.get("aria-label") or "")


def test_sparkline_heights_follow_the_values_from_zero() -> None:
    values = [0, 2, 5, 5, 1, 9, 3]
    points = [(T0 + timedelta(minutes=10 * i), v) for i, v in enumerate(values)]
    root = parse(sparkline(points, label="pool", height=40))
    ys = path_ys(root)
    assert len(ys) == len(values)
    for (a, ya), (b, yb) in zip(
        zip(values, ys, strict=True), zip(values[1:], ys[1:], strict=True), strict=False
    ):
        # SVG y grows downwards: a larger value is drawn higher (smaller y), equal values at the same height
        assert (a < b) == (ya > yb) and (a == b) == (ya == yb)
    assert ys[0] == pytest.approx(38)  # zero sits on the bottom edge (2 px padding)
    assert min(ys) == pytest.approx(2)  # the highest value touches the top
    assert "now 3, lowest 0, highest 9, 7 samples" in (root.get("aria-label") or "")


def test_sparkline_orders_points_by_time_and_steps_at_each_sample() -> None:
    later, earlier = (T0 + timedelta(hours=2), 1), (T0, 5)
    root = parse(sparkline([later, earlier], label="pool"))
    ys = path_ys(root)
    assert ys[0] < ys[1]  # 5 first (higher), then 1
    assert "now 1" in (root.get("aria-label") or "")


def test_histogram_of_nothing_says_no_data() -> None:
    root = parse(histogram([], unit="ms", label="claims"))
    assert texts(root) == ["no data"]
    assert not list(root.iter(f"{SVG}rect"))


def test_histogram_of_one_value_is_one_bar_with_both_marks_on_it() -> None:
    root = parse(histogram([42.0], unit="ms", label="claims"))
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    assert len(bars) == 1
    labels = [t for t in texts(root) if t.startswith("p")]
    assert labels == ["p50 42 ms", "p90 42 ms"]


def test_histogram_counts_every_value_in_one_bar_and_bars_grow_with_counts() -> None:
    values = [1.0] * 8 + [5.0] * 2 + [10.0] * 4
    root = parse(histogram(values, unit="s", label="ready", bins=3))
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    tips = [(bar.find(f"{SVG}title").text or "") for bar in bars]  # type: ignore[union-attr]
    counts = [int(t.rsplit(": ", 1)[1]) for t in tips]
    assert counts == [8, 2, 4] and sum(counts) == len(values)
    heights = [float(bar.get("height", "0")) for bar in bars]
    assert sorted(range(3), key=lambda i: heights[i]) == sorted(range(3), key=lambda i: counts[i])
    assert "14 values, p50 1 s, p90 10 s, from 1 to 10 s" in (root.get("aria-label") or "")


def test_histogram_marks_p50_and_p90_distinctly_with_text() -> None:
    values = [float(v) for v in range(1, 101)]
    root = parse(histogram(values, unit="ms", label="claims"))
    marks = {
        line.get("class"): line
        for line in root.iter(f"{SVG}line")
        if (line.get("class") or "").startswith("mark")
    }
    assert set(marks) == {"mark mark-p50", "mark mark-p90"}
    assert marks["mark mark-p90"].get("stroke-dasharray") and not marks["mark mark-p50"].get(
        "stroke-dasharray"
    )
    x50, x90 = (float(marks[f"mark mark-{n}"].get("x1", "0")) for n in ("p50", "p90"))
    assert x50 < x90
    assert f"p50 {percentile(values, 0.5):g} ms" in texts(root)
    assert "p90 90.1 ms" in texts(root)


def test_percentile_interpolates_like_postgres() -> None:
    assert percentile([1, 2, 3, 4], 0.5) == 2.5
    assert percentile([10], 0.9) == 10
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9) == pytest.approx(9.1)
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_week_cells_apply_slots_over_the_default() -> None:
    cells = week_cells([(0, 9, 17, 5), (5, 0, 24, 0), (0, 12, 13, 7)], default=2)
    assert cells[0][8] == 2 and cells[0][9] == 5 and cells[0][16] == 5 and cells[0][17] == 2
    assert cells[0][12] == 7  # the later slot wins
    assert set(cells[5]) == {0} and set(cells[6]) == {2}
    with pytest.raises(ValueError):
        week_cells([(7, 0, 1, 1)], default=0)


def test_week_schedule_writes_every_count_and_hatches_the_scheduled_hours() -> None:
    root = parse(week_schedule([(0, 9, 17, 5)], default=1, label="weekdays"))
    groups = [g for g in root.iter(f"{SVG}g") if (g.get("class") or "").startswith("cell")]
    assert len(groups) == 7 * 24
    scheduled = [g for g in groups if "scheduled" in (g.get("class") or "")]
    assert len(scheduled) == 8
    for g in scheduled:
        rect, text = g.find(f"{SVG}rect"), g.find(f"{SVG}text")
        assert rect is not None and (rect.get("fill") or "").startswith("url(#")
        assert text is not None and text.text == "5" and text.get("font-weight") == "bold"
    assert "Mon 09:00–17:00 5" in (root.get("aria-label") or "")
    assert {"Mon", "Sun"} <= set(texts(root))


def test_two_charts_on_one_page_do_not_share_pattern_ids() -> None:
    a = histogram([1.0, 2.0], unit="ms", label="a")
    b = histogram([1.0, 2.0], unit="ms", label="b")
    ids_a = set(re.findall(r'id="([^"]+)"', a))
    ids_b = set(re.findall(r'id="([^"]+)"', b))
    assert ids_a and not ids_a & ids_b
