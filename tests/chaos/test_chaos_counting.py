"""The chaos harness's own judgement, without processes: what counts as over target, at target, a disturbed
daemon, a daemon's process, and a violation. The short run can only report honestly if these are right."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.chaos import PidBook, Proc, Recovery, Sample, ScenarioStats, pid_in_worker_id


def test_a_pool_is_over_target_when_running_plus_starting_exceeds_desired() -> None:
    sample = Sample(0.0, {"pool-5": (5, 4, 1), "pool-3": (3, 3, 1), "pool-8": (8, 0, 8)})
    assert sample.over == ["pool-3"]
    assert not sample.at_target  # pool-8 has nothing running yet


def test_pools_are_at_target_only_when_every_pool_runs_its_desired_count() -> None:
    assert Sample(0.0, {"pool-5": (5, 5, 0), "pool-3": (3, 3, 0), "pool-8": (8, 8, 0)}).at_target
    assert not Sample(
        0.0, {"pool-5": (5, 5, 0), "pool-3": (3, 3, 0)}
    ).at_target  # a pool missing from the read


def test_a_daemon_is_disturbed_by_a_stop_or_partition_while_it_lasts_and_by_a_kill_for_ever() -> None:
    book = PidBook()
    stop = book.begin(10, "stop", at=100.0)
    assert book.quiet_since(10) is None
    book.end(stop, at=160.0)
    assert book.quiet_since(10) == 160.0
    assert book.disturbed_between(10, 150.0, 200.0)
    assert not book.disturbed_between(10, 170.0, 200.0)
    book.begin(11, "kill", at=50.0)
    assert book.killed_at(11) == 50.0
    assert book.quiet_since(11) is None
    assert book.disturbed_between(11, 1000.0, 2000.0)
    assert not book.disturbed_between(12, 0.0, 1e12)  # never touched


def test_a_worker_id_is_mapped_to_its_process_through_the_daemon_started_lines(tmp_path: Path) -> None:
    proc = Proc("standalone-lo", [sys.executable, "-c", "pass"], tmp_path, {})
    proc.start()
    assert proc.popen is not None
    proc.popen.wait(timeout=30)
    with open(proc.log_path, "a") as log:
        log.write(
            '{"event": "daemon.started", "worker_id": "replica-7f/embedded-0#ab12"}\n'
            "\x1b[2m2026\x1b[0m [info] \x1b[1mdaemon.started\x1b[0m \x1b[36mworker_id\x1b[0m=\x1b[35mlo-1#cd34\x1b[0m\n"
        )
    book = PidBook()
    book.started(proc)
    assert book.worker_pid("replica-7f/embedded-0#ab12") == proc.pid
    assert book.worker_pid("lo-1#cd34@key:6e2b") == proc.pid  # the server qualifies a standalone daemon's id
    assert book.worker_pid("someone-else#ef56") is None
    assert pid_in_worker_id("vm:4242:embedded-1:99aa") == 4242


def test_any_count_or_missed_bound_is_a_violation_and_a_clean_row_is_not() -> None:
    clean = ScenarioStats("clean", recoveries=[Recovery(3.0, 15.0)], rejoined=True)
    assert clean.violations == []
    late = ScenarioStats("late", recoveries=[Recovery(3.0, 15.0), Recovery(None, 15.0)])
    assert late.violations == ["1 of 2 recoveries over the 15 s bound (worst never)"]
    assert "max never" in late.recovery_cell()
    counted = ScenarioStats("counted", over_target=1, lost_completions=2, daemons_lost=3, rejoined=False)
    assert counted.violations == [
        "1 samples over target",
        "2 lost completions",
        "3 daemons lost",
        "rejoined: no",
    ]
