"""A standalone daemon's log posts stay within the server's limits: batches of at most ``LOG_BATCH`` lines and
``limits.LOG_POST_TOTAL`` characters, each line at most ``limits.LOG_LINE`` (a larger post would be refused)."""

from __future__ import annotations

from prebuildd.domain import limits
from prebuildd.queue.http import LOG_BATCH, log_batches
from prebuildd.queue.port import LogLine


def test_batches_are_bounded_by_lines_and_characters() -> None:
    full = LogLine("info", "apply", "o" * limits.LOG_LINE.maximum)
    lines = [full] * (2 * limits.LOG_POST_TOTAL.maximum // limits.LOG_LINE.maximum + 3)
    batches = log_batches(lines)
    assert len(batches) > 2
    assert sum(len(batch) for batch in batches) == len(lines)  # nothing lost, in order
    for batch in batches:
        assert len(batch) <= LOG_BATCH
        assert sum(len(line["output"]) for line in batch) <= limits.LOG_POST_TOTAL.maximum

    short = log_batches([LogLine("info", "", "x")] * (LOG_BATCH * 2 + 1))
    assert [len(batch) for batch in short] == [LOG_BATCH, LOG_BATCH, 1]


def test_a_line_longer_than_the_limit_is_cut() -> None:
    [[line]] = log_batches([LogLine("warn", "plan", "y" * (limits.LOG_LINE.maximum + 10))])
    assert len(line["output"]) == limits.LOG_LINE.maximum
    assert log_batches([]) == []
