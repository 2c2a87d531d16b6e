"""Notifications to operators: one webhook POST per cycle listing the presets that became hard-limited."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import structlog

from prebuildd.domain.redaction import redact_url

log = structlog.get_logger(__name__)


class WebhookNotifier:
    def __init__(
        self, url: str, *, attempts: int = 4, first_retry: float = 1.0, timeout: float = 10.0
    ) -> None:
        self.url = url
        self.shown_url = redact_url(url, keep_path=False)
        """What the logs say: a webhook's path and query are often its credential (Slack's are)."""
        self.attempts = attempts
        self.first_retry = first_retry
        self.timeout = timeout
        self._tasks: set[asyncio.Task[bool]] = set()

    def hard_limited(self, presets: Sequence[dict[str, Any]]) -> None:
        """Send in the background (never delays a cycle); retried with doubling pauses on failure."""
        payload = {"event": "prebuilds.hard_limited", "presets": list(presets)}
        task = asyncio.create_task(self.send(payload))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[bool]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:  # never an unretrieved exception
            log.error("notify.webhook_crashed", url=self.shown_url, error=self._scrub(str(exc)), exc_info=exc)

    async def send(self, payload: dict[str, Any]) -> bool:
        pause = self.first_retry
        for attempt in range(1, self.attempts + 1):
            try:
                async with httpx.AsyncClient(timeout=self.timeout) as client:
                    response = await client.post(self.url, json=payload)
                if response.status_code < 300:
                    log.info("notify.webhook_sent", url=self.shown_url, presets=len(payload["presets"]))
                    return True
                error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                error = self._scrub(str(exc)) or type(exc).__name__
            log.warning("notify.webhook_failed", url=self.shown_url, attempt=attempt, error=error)
            if attempt < self.attempts:
                await asyncio.sleep(pause)
                pause *= 2
        return False

    def _scrub(self, text: str) -> str:
        # httpx names the URL in some errors (redirects, invalid URLs): never with its secret parts.
        return text.replace(self.url, self.shown_url)

    async def drain(self) -> None:
        """Wait for notifications in flight (used on shutdown and in tests)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
