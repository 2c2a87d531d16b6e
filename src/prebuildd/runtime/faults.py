"""Faults of prebuildd itself, logged once per state change: one line when a component loses a dependency (the
database, the server), one when it has it back, never one per retry.

A component that retries every second during a 40 s outage would otherwise write 40 warnings; operators need
two lines (down, back) and a gauge. Every loop that talks to the database or the server holds a ``FaultState``
per dependency and reports each attempt's result to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

ChangeHook = Callable[[str, str, bool], None]
"""``hook(component, dependency, down)``: called on every state change (metrics attach here)."""


class FaultState:
    """Whether one component can reach one dependency, with a log line per change and an optional hook."""

    def __init__(
        self,
        component: str,
        dependency: str = "database",
        *,
        on_change: ChangeHook | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.component = component
        self.dependency = dependency
        self.on_change = on_change
        self._monotonic = monotonic
        self.down_since: float | None = None
        self.failures = 0
        """Failed attempts in the current outage (0 while up)."""
        self.last_error = ""

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, error: BaseException | str, **ids: object) -> bool:
        """Report a failed attempt; True when this attempt took the component down (the one logged)."""
        self.failures += 1
        self.last_error = str(error) or type(error).__name__
        if self.down_since is not None:
            return False
        self.down_since = self._monotonic()
        log.warning(
            "component.unavailable",
            component=self.component,
            dependency=self.dependency,
            error=self.last_error,
            **ids,
        )
        if self.on_change is not None:
            self.on_change(self.component, self.dependency, True)
        return True

    def recovered(self, **ids: object) -> bool:
        """Report a successful attempt; True when it ended an outage (the one logged)."""
        if self.down_since is None:
            return False
        down_for = self._monotonic() - self.down_since
        log.info(
            "component.recovered",
            component=self.component,
            dependency=self.dependency,
            down_seconds=round(down_for, 1),
            failed_attempts=self.failures,
            **ids,
        )
        self.down_since, self.failures, self.last_error = None, 0, ""
        if self.on_change is not None:
            self.on_change(self.component, self.dependency, False)
        return True
