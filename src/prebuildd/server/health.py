"""The readiness checks and gauges of what this replica runs (its embedded daemons, its reconcile loop), built
from the supervisor's task health and registered into ``Services`` for ``/readyz`` (the API never imports this).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from prebuildd.api.context import Services
from prebuildd.api.readiness import CheckResult, ReadinessCheck
from prebuildd.prebuilds.loop import Reconciler
from prebuildd.runtime.clock import Clock
from prebuildd.server.supervisor import TaskHealth

READY_INTERVALS = 3
"""/readyz fails when the reconcile loop has not attempted a cycle for this many intervals."""


def daemon_task_name(index: int) -> str:
    return f"daemon-{index}"


class ReplicaHealth:
    """Reads the supervisor's ``tasks`` and the reconciler's timestamps; ``started_at`` stands in for a cycle
    before the first one."""

    def __init__(
        self,
        *,
        tasks: Mapping[str, TaskHealth],
        daemons: int,
        reconciler: Reconciler,
        reconcile_interval: float,
        clock: Clock,
        started_at: datetime,
    ) -> None:
        self.tasks = tasks
        self.daemons = daemons
        self.reconciler = reconciler
        self.reconcile_interval = reconcile_interval
        self.clock = clock
        self.started_at = started_at

    def register(self, services: Services) -> None:
        metrics = services.metrics
        metrics.daemons_configured.set(self.daemons)
        metrics.daemons_alive.set_function(lambda: sum(1 for h in self.daemon_health() if h.running))
        metrics.since_success.set_function(self.seconds_since_success)
        if self.daemons:
            services.readiness_checks.append(ReadinessCheck("daemons", self.check_daemons))
        services.readiness_checks.append(ReadinessCheck("reconciler", self.check_reconciler))

    def daemon_health(self) -> list[TaskHealth]:
        names = [daemon_task_name(i) for i in range(self.daemons)]
        return [self.tasks.get(name) or TaskHealth(name, state="not started") for name in names]

    async def check_daemons(self) -> CheckResult:
        health = self.daemon_health()
        down = {h.name: h.describe() for h in health if not h.running}
        detail = {"configured": len(health), "alive": len(health) - len(down), "down": down}
        if not down:
            return CheckResult(True, detail=detail)
        reason = ", ".join(f"{name} {why}" for name, why in down.items())
        return CheckResult(False, f"embedded daemon not running: {reason}", detail)

    async def check_reconciler(self) -> CheckResult:
        last = self.reconciler.last_attempt_at
        success = self.reconciler.last_success_at
        detail = {
            "last_attempt_at": last.isoformat() if last else None,
            "last_success_at": success.isoformat() if success else None,
            "interval_seconds": self.reconcile_interval,
        }
        # A cycle that ended is as fresh a sign of life as one that began: a long cycle (or a clock that moved
        # while one ran) must not read as a stall because it started long ago.
        latest = max((t for t in (last, success) if t is not None), default=self.started_at)
        since = (self.clock.now() - latest).total_seconds()
        if since <= READY_INTERVALS * self.reconcile_interval:
            return CheckResult(True, detail=detail)
        what = "no cycle attempted since start" if last is None else "no cycle attempted for"
        return CheckResult(
            False,
            f"reconcile loop stalled: {what} {since:.0f} s (more than {READY_INTERVALS} intervals of "
            f"{self.reconcile_interval:g} s)",
            detail,
        )

    def seconds_since_success(self) -> float:
        last = self.reconciler.last_success_at
        return max((self.clock.now() - (last or self.started_at)).total_seconds(), 0.0)
