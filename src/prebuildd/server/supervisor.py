"""What the server's supervisor (``Server._supervise``) keeps per background task: how to restart it and how it is.

Every background part of the server (the listener, the provisioner daemons, the reconciler, the stale-job reaper,
the embedded PostgreSQL's watcher) is a ``BackgroundService`` run under the supervisor: an exception is logged at
once (``server.task_crashed``) and the task starts again after a backoff that doubles per consecutive crash, is
capped, and starts over once the task has run fine for ``healthy_after`` seconds. ``TaskHealth`` is what
``/readyz`` and the metrics read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class BackgroundService:
    """A loop that starts and stops with the server (the stale-job reaper, the reconciler, a daemon)."""

    name: str
    run: Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class RestartPolicy:
    """The pause before restarting a crashed task: ``first`` × ``factor``^(crashes − 1), at most ``cap``."""

    first: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    healthy_after: float = 60.0
    """A task that ran this long before crashing counts as healthy: its next crash waits ``first`` again."""

    def delay(self, consecutive_crashes: int) -> float:
        exponent = max(consecutive_crashes - 1, 0)
        # Computed in steps so that a long crash streak never overflows the float.
        delay = self.first
        for _ in range(exponent):
            delay *= self.factor
            if delay >= self.cap:
                return self.cap
        return min(delay, self.cap)


RUNNING = "running"
RESTARTING = "restarting"
FINISHED = "finished"
STOPPED = "stopped"


@dataclass
class TaskHealth:
    """The supervisor's view of one task."""

    name: str
    state: str = "starting"
    """starting, running, restarting (crashed, waiting to start again), finished (returned) or stopped."""
    restarts: int = 0
    consecutive_crashes: int = 0
    last_error: str = ""
    restart_in: float = 0.0

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    def describe(self) -> str:
        """Why the task is not running, for ``/readyz``."""
        if self.state == RESTARTING:
            return f"crashed ({self.last_error}), restarting in {self.restart_in:.0f} s"
        if self.state == FINISHED:
            return "exited"
        return self.state

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"state": self.state, "restarts": self.restarts}
        if self.last_error:
            body["last_error"] = self.last_error
        return body
