"""The chaos harness: one PostgreSQL and three `prebuildd server` replicas as real processes, faulted on a schedule
(kill -9, PostgreSQL restarts and outages, SIGSTOP of the lock holder, a daemon killed mid-job, a network partition)
while claims run, and a poller that reads PostgreSQL directly and counts what went wrong.

Shared by the short form (tests/chaos/test_chaos_short.py, part of the test suite) and the long form
(bench/chaos.py, which writes docs/reliability.md). Everything it starts carries ``PBCHAOS_RUN`` in its
environment, so a later run can find and remove what a crashed run left behind; the network namespace and the
veth pair use the fixed prefix ``pbchaos``.
"""

from tests.support.chaos.harness import Harness
from tests.support.chaos.params import ChaosParams, long_params, short_params
from tests.support.chaos.poller import Sample
from tests.support.chaos.processes import PidBook, Proc, netns_available, pid_in_worker_id
from tests.support.chaos.report import ChaosReport, Recovery, ScenarioStats
from tests.support.chaos.scenarios import run_chaos

__all__ = [
    "ChaosParams",
    "ChaosReport",
    "Harness",
    "PidBook",
    "Proc",
    "Recovery",
    "Sample",
    "ScenarioStats",
    "long_params",
    "netns_available",
    "pid_in_worker_id",
    "run_chaos",
    "short_params",
]
