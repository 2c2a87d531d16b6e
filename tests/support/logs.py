"""A provisioner log sink that records every line, for the provisioner tests to read back or wait on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Logs:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, str]] = []
        self.on_line: Callable[[str], None] | None = None
        self.changed = asyncio.Event()

    async def __call__(self, level: str, stage: str, line: str) -> None:
        self.records.append((level, stage, line))
        self.changed.set()
        if self.on_line is not None:
            self.on_line(line)

    def lines(self, stage: str | None = None) -> list[str]:
        return [line for _, s, line in self.records if stage is None or s == stage]

    def text(self) -> str:
        return "\n".join(self.lines())
