"""FaultState: one log line per change of state, never one per failed attempt."""

from __future__ import annotations

from structlog.testing import capture_logs

from prebuildd.runtime.faults import FaultState
from prebuildd.runtime.metrics import Metrics


def test_an_outage_is_two_lines_however_many_attempts_fail() -> None:
    now = [100.0]
    changes: list[tuple[str, str, bool]] = []
    state = FaultState("daemon", on_change=lambda *c: changes.append(c), monotonic=lambda: now[0])
    with capture_logs() as logs:
        assert state.recovered() is False  # up already: nothing to say
        assert state.failed(OSError("connection refused")) is True
        for _ in range(40):
            now[0] += 1
            assert state.failed(OSError("connection refused")) is False
        assert state.down and state.failures == 41
        assert state.recovered(worker_id="w") is True
        assert state.recovered() is False
    assert [e["event"] for e in logs] == ["component.unavailable", "component.recovered"]
    assert logs[0]["component"] == "daemon" and logs[0]["error"] == "connection refused"
    assert logs[1]["down_seconds"] == 40.0 and logs[1]["failed_attempts"] == 41
    assert logs[1]["worker_id"] == "w"
    assert changes == [("daemon", "database", True), ("daemon", "database", False)]
    assert not state.down and state.failures == 0


def test_metrics_count_outages_and_show_the_current_state() -> None:
    metrics = Metrics()
    state = FaultState("reconciler", on_change=metrics.component_changed)
    state.failed("timeout")
    state.failed("timeout")
    text = metrics.render().decode()
    assert 'prebuildd_component_down{component="reconciler",dependency="database"} 1.0' in text
    assert 'prebuildd_component_outages_total{component="reconciler",dependency="database"} 1.0' in text
    state.recovered()
    text = metrics.render().decode()
    assert 'prebuildd_component_down{component="reconciler",dependency="database"} 0.0' in text
