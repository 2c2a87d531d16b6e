"""Running one ``terraform`` command: machine-readable output parsed into the job log line by line, a deadline,
and cancellation.

Terraform runs in its own session through the provisioners' one process runner (``provisioner.process``), like
an exec script, so the whole process group (Terraform, its provider plugins, ``local-exec`` commands) can be
signalled: a cancellation or a timeout interrupts the group (SIGINT, what Ctrl-C does: Terraform stops its
operation and writes its state), waits the grace period, then kills the group. Processes a command leaves running in the
group are killed when Terraform exits; a ``local-exec`` that must start something long-lived detaches it into
its own session (``setsid``).

With ``-json`` each stdout line is one JSON message (``@level``, ``@message``, ``type``, and for diagnostics a
``diagnostic`` with severity, summary, detail, the file range and the resource address). Each becomes a log
line at its level, prefixed with its resource address; a diagnostic becomes its summary, detail and location
and is kept for the job's error. A line that is not such a message is logged as it is. Stderr lines (CLI
configuration warnings, crashes) are logged as warnings, and a Go panic marks the run as crashed.
"""

from __future__ import annotations

import json
import signal
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prebuildd.provisioner.base import LogSink
from prebuildd.provisioner.process import SpawnError, Warnings, run_process

TAIL_LINES = 10
"""Log lines quoted in an error that has no diagnostic to show."""
_WARNINGS = Warnings(
    leftover_processes="terraform left processes running in its process group (started by a local-exec?); "
    "they were killed (detach long-lived processes into their own session, e.g. with setsid)",
    output_still_open="terraform's output is still open after it exited (held by a detached process that did "
    "not redirect its output?); no longer reading it",
)
_LEVELS = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
}
_CRASH_MARKS = ("panic: ", "TERRAFORM CRASH", "Terraform crashed!")


@dataclass(frozen=True)
class Diagnostic:
    severity: str
    summary: str
    detail: str = ""
    file: str | None = None
    line: int | None = None
    address: str | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Diagnostic:
        raw_range = d.get("range")
        where: Mapping[str, Any] = raw_range if isinstance(raw_range, dict) else {}
        raw_start = where.get("start")
        start: Mapping[str, Any] = raw_start if isinstance(raw_start, dict) else {}
        line = start.get("line")
        return cls(
            severity=str(d.get("severity") or "error"),
            summary=str(d.get("summary") or "").strip(),
            detail=str(d.get("detail") or "").strip(),
            file=str(where["filename"]) if where.get("filename") else None,
            line=line if isinstance(line, int) else None,
            address=str(d["address"]) if d.get("address") else None,
        )

    @property
    def located(self) -> bool:
        """The diagnostic points into the configuration (so the template is at fault)."""
        return self.file is not None

    def describe(self) -> str:
        where = (
            f"{self.file}:{self.line}: " if self.file and self.line else f"{self.file}: " if self.file else ""
        )
        text = f"{where}{self.summary}" + (f": {self.detail}" if self.detail else "")
        if self.address and self.address not in text:
            text += f" ({self.address})"
        return text


@dataclass
class CommandResult:
    returncode: int | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    stdout: list[str] = field(default_factory=list)
    """Raw stdout lines, kept only when asked for (``capture``)."""
    crashed: bool = False
    timed_out: bool = False
    garbled: int = 0
    """Stdout lines that were expected to be JSON messages and were not."""

    @property
    def errors(self) -> list[Diagnostic]:
        unique: list[Diagnostic] = []
        for d in self.diagnostics:
            if d.severity == "error" and d not in unique:
                unique.append(d)
        return unique

    @property
    def killed_by(self) -> str | None:
        code = self.returncode
        if code is None or code >= 0:
            return None
        try:
            return signal.Signals(-code).name
        except ValueError:
            return str(-code)


class TerraformNotRunnable(Exception):
    """The binary could not be started (missing, not executable)."""


def _address(message: Mapping[str, Any]) -> str | None:
    for key in ("hook", "change"):
        part = message.get(key)
        if isinstance(part, dict) and isinstance(part.get("resource"), dict):
            addr = part["resource"].get("addr")
            if isinstance(addr, str):
                return addr
    return None


@dataclass
class TerraformCommand:
    """Runs ``binary args...`` in ``cwd``; see the module docstring."""

    binary: str
    cwd: Path
    env: Mapping[str, str]
    log: LogSink
    grace_seconds: float

    async def run(
        self,
        args: Sequence[str],
        stage: str,
        *,
        deadline: float | None = None,
        json_lines: bool = True,
        capture: bool = False,
    ) -> CommandResult:
        """Run to completion (or to ``deadline``, a loop time); a cancellation stops Terraform and re-raises."""
        result = CommandResult()

        async def on_line(source: str, text: str) -> None:
            await self._line(source, text, result, stage, json_lines, capture)

        try:
            ended = await run_process(
                [self.binary, *args],
                cwd=self.cwd,
                env=self.env,
                on_line=on_line,
                log=self.log,
                stage=stage,
                deadline=deadline,
                grace_seconds=self.grace_seconds,
                warnings=_WARNINGS,
            )
        except SpawnError as failed:
            raise TerraformNotRunnable(f"{self.binary}: {failed.error.strerror or failed.error}") from None
        result.returncode = ended.returncode
        result.timed_out = ended.timed_out
        return result

    async def _line(
        self, source: str, text: str, result: CommandResult, stage: str, json_lines: bool, capture: bool
    ) -> None:
        if source == "error":  # stderr
            if any(mark in text for mark in _CRASH_MARKS):
                result.crashed = True
            if text.strip():
                result.tail.append(text)
            await self.log("warn", stage, text)
        elif capture:
            result.stdout.append(text)
        elif json_lines:
            await self._message(text, result, stage)
        else:
            result.tail.append(text)
            await self.log("info", stage, text)

    async def _message(self, text: str, result: CommandResult, stage: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("@message"), str):
            if text.strip():
                result.garbled += 1
                result.tail.append(text)
            await self.log("info", stage, text)
            return
        level = _LEVELS.get(str(message.get("@level", "info")).lower(), "info")
        if message.get("type") == "diagnostic" and isinstance(message.get("diagnostic"), dict):
            diagnostic = Diagnostic.from_json(message["diagnostic"])
            result.diagnostics.append(diagnostic)
            label = "Warning" if diagnostic.severity == "warning" else "Error"
            lines = f"{label}: {diagnostic.describe()}".splitlines()
        else:
            body = message["@message"].strip("\n")
            address = _address(message)
            if address and not body.startswith(address):
                body = f"{address}: {body}"
            lines = body.splitlines() or [""]
        for line in lines:
            result.tail.append(line)
            await self.log(level, stage, line)
