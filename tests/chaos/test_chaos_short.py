"""The chaos suite's short form (at most 3 minutes): every fault scenario of tests/support/chaos.py once, against
3 real replicas on one PostgreSQL, failing on any violation; the long form is bench/chaos.py.

Needs root (network namespaces, kill -9 of PostgreSQL's processes) and `ip`: skipped without them, except under
CI=true, where it must run.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support.chaos import netns_available, run_chaos, short_params


@pytest.mark.timeout(420)
async def test_the_short_chaos_run_shows_no_violation() -> None:
    reason = netns_available()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the chaos suite must run under CI=true: {reason}")
        pytest.skip(f"chaos suite: {reason}")
    lines: list[str] = []
    report = await run_chaos(short_params(), log=lines.append)
    print(report.text())
    report.prune()
    assert not report.violations, report.text() + "\n\nprogress:\n" + "\n".join(lines)
    shutil.rmtree(report.workdir, ignore_errors=True)  # kept, logs only, when the run failed
