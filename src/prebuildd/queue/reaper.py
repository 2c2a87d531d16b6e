"""The stale-job reaper: a loop that fails running jobs whose daemon stopped sending heartbeats.

A daemon killed mid-job never completes it; without the reaper its job would stay `running` forever and its
workspace would never fail over (SPEC §12). The loop is its own object, with the clock and the stale timeout
injected, so tests drive it one pass at a time; the server only constructs it and registers it as a background
service. While the database is unreachable a pass fails; the loop keeps its cadence and logs the outage once
(``runtime.faults``), not once per pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Protocol
from uuid import UUID

import structlog

from prebuildd.runtime.clock import Clock
from prebuildd.runtime.faults import ChangeHook, FaultState
from prebuildd.store.errors import StoreTimeout, StoreUnavailable

log = structlog.get_logger(__name__)

MAX_INTERVAL_SECONDS = 30.0


class StaleJobs(Protocol):
    """What the reaper needs of the queue (``PgJobQueue`` provides it)."""

    async def fail_stale(self, stale_after: timedelta) -> list[UUID]: ...


class StaleJobReaper:
    """Every ``interval`` seconds, fail the jobs with no heartbeat for ``stale_after`` (class daemon_lost)."""

    def __init__(
        self,
        queue: StaleJobs,
        clock: Clock,
        stale_after: timedelta,
        *,
        interval: float | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_change: ChangeHook | None = None,
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.stale_after = stale_after
        # A fifth of the timeout: a job is failed at most 20 % after it went stale, and capped so that a long
        # timeout does not make the reaper sleep for many minutes.
        self.interval = (
            interval if interval is not None else min(stale_after.total_seconds() / 5, MAX_INTERVAL_SECONDS)
        )
        self._sleep = sleep
        self.fault = FaultState("stale-job-reaper", on_change=on_change)

    async def reap_once(self) -> list[UUID]:
        """One pass: the ids of the jobs failed as stale (the queue logs ``job.failed_stale`` for each)."""
        failed = await self.queue.fail_stale(self.stale_after)
        if failed:
            log.info(
                "job.reaper_pass",
                failed=len(failed),
                cutoff=(self.clock.now() - self.stale_after).isoformat(),
            )
        return failed

    async def run(self) -> None:
        while True:
            try:
                await self.reap_once()
            except (StoreUnavailable, StoreTimeout, OSError) as exc:
                # Any other error is a bug: it reaches the supervisor, which logs it and restarts the loop.
                self.fault.failed(exc)
            else:
                self.fault.recovered()
            await self._sleep(self.interval)
