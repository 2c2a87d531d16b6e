"""The chaos run's constants and schedules: the pools, the names it uses on the machine, and the short and
long forms' parameters."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

MARKER = "PBCHAOS_RUN"
NETNS = "pbchaos-ns"
VETH_HOST = "pbchaos-h"
VETH_NS = "pbchaos-d"
HOST_ADDRESS = "10.231.7.1"
NS_ADDRESS = "10.231.7.2"
LOCK_FILE = Path(tempfile.gettempdir()) / "pbchaos.lock"
DATABASE = "prebuildd"
CYCLE_LOCK_KEY = 0x70726563
"""The reconciler's advisory cycle lock (prebuilds/loop.py CYCLE_LOCK), for the lock-holder detection."""

POOL_TEMPLATE = "chaos"
PROBE_TEMPLATE = "chaos-probe"
LO_TEMPLATE = "chaos-lo"
NS_TEMPLATE = "chaos-ns"
POOLS = {"pool-5": 5, "pool-3": 3, "pool-8": 8}
POOL_TAG = "pool=chaos"
"""Pool jobs carry this tag and only the embedded daemons offer it: the standalone daemons run their own
templates, so a fault of theirs is measured on its own and a pool's recovery depends on the replicas only."""


# -- parameters --------------------------------------------------------------------------------------------


@dataclass
class ChaosParams:
    """One run's schedule. ``None`` for an interval or timeout means the server's default."""

    form: str
    replica_kills: int
    min_claims: int
    min_duration: float
    """Replica kills go on (beyond ``replica_kills``) until the run has lasted this long and made this many claims."""
    pg_restarts: int = 1
    pg_outage: float = 40.0
    freeze: float = 60.0
    partition: float = 30.0
    replicas: int = 3
    daemons_per_replica: int = 3
    reconcile_interval: float | None = None
    stale_job_timeout: float | None = None
    heartbeat_interval: float = 2.0
    claim_every: float = 2.0
    claim_batch: int = 3
    start_delay: str = "3s"
    delete_delay: str = "1s"
    import_delay: str = "1s"
    standalone_delay: str = "6s"
    replica_bound: float = 15.0
    pg_bound: float = 30.0
    freeze_bound: float = 30.0
    recovery_slack: float = 15.0
    """How long past its bound a recovery is awaited before it is reported as missed."""
    pending_bound: float = 60.0
    """A pending job older than this (counted from the end of the last fault) is stuck."""
    lost_completion_bound: float = 30.0
    """A job still running this long after its daemon was last disturbed has lost its completion."""
    probe_deadline: float = 40.0
    kill_down: tuple[float, float] = (1.0, 4.0)

    @property
    def stale_timeout_effective(self) -> float:
        return self.stale_job_timeout if self.stale_job_timeout is not None else 300.0

    @property
    def stuck_running_bound(self) -> float:
        """A job held by a dead daemon must be failed within the stale timeout plus a reaper pass plus a margin."""
        stale = self.stale_timeout_effective
        return stale + min(stale / 5, 60.0) + 30.0


def short_params() -> ChaosParams:
    """The short form (at most 3 minutes): every scenario once, faults and bounds scaled to fit. What is
    shortened: the stale-job timeout (30 s, so that a lost job fails within the run), the PostgreSQL outage (8 s),
    the freeze (32 s: just past the 30 s bound), the partition (8 s), the heartbeat (1 s), the standalone jobs
    (4 s); a recovery is awaited only up to its bound."""
    return ChaosParams(
        form="short",
        replica_kills=2,
        min_claims=0,
        min_duration=0.0,
        pg_restarts=1,
        pg_outage=8.0,
        freeze=32.0,
        partition=8.0,
        stale_job_timeout=30.0,
        heartbeat_interval=1.0,
        claim_every=1.5,
        claim_batch=2,
        standalone_delay="4s",
        recovery_slack=0.0,
        pending_bound=30.0,
        lost_completion_bound=20.0,
        probe_deadline=20.0,
        kill_down=(0.5, 1.5),
    )


def long_params() -> ChaosParams:
    """The long form: default reconcile interval and stale-job timeout, 40 s PostgreSQL outage, 60 s freeze."""
    return ChaosParams(
        form="long", replica_kills=30, min_claims=300, min_duration=600.0, pg_restarts=2, recovery_slack=10.0
    )
