"""A standalone provisioner daemon (`prebuildd provisioner start`) as a real process, for the e2e tests."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class DaemonProcess:
    proc: asyncio.subprocess.Process
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    async def exited(self, timeout: float = 30.0) -> int:
        """The exit code, waiting at most ``timeout`` seconds for the process to end."""
        return await asyncio.wait_for(self.proc.wait(), timeout=timeout)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def _stderr_file(work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    return work / "stderr.log"


async def start_daemon(url: str, key: str, work: Path, *args: str) -> DaemonProcess:
    stderr_path = _stderr_file(work)
    with open(stderr_path, "wb") as stderr:  # noqa: ASYNC230 (a local file, opened once)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "prebuildd",
            "provisioner",
            "start",
            "--url",
            url,
            "--key",
            key,
            "--name",
            "standalone",
            "--work-dir",
            str(work / "data"),
            "--heartbeat-interval",
            "0.2",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    return DaemonProcess(proc, stderr_path)
