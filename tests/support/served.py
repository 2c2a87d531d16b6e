"""`prebuildd server` run for real as a subprocess: started, read until it listens, stopped with SIGTERM.

The startup-failure and upgrade tests each need "this command line serves, then stops cleanly"; the one
helper here reads the JSON log for `server.listening`, keeps the stderr pipe drained while the test runs, and
asserts exit 0 on SIGTERM (a hang or crash on stop fails the test that started the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Mapping, Sequence

import pytest


@contextlib.asynccontextmanager
async def served(argv: Sequence[str], env: Mapping[str, str], *, timeout: float) -> AsyncIterator[str]:
    """Run ``argv`` (a full `prebuildd server` command line) and yield its base URL once it listens. Leaving the
    block sends SIGTERM and asserts a clean exit within ``timeout``; an early exit fails with what it wrote."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
    )
    assert process.stderr is not None
    stderr = process.stderr
    lines: list[str] = []
    drainer: asyncio.Task[None] | None = None
    try:
        url = ""
        while not url:
            try:
                line = await asyncio.wait_for(stderr.readline(), timeout)
            except TimeoutError:
                pytest.fail("the server wrote nothing for a while before listening:\n" + "".join(lines))
            if not line:
                pytest.fail("the server exited before listening:\n" + "".join(lines))
            lines.append(line.decode(errors="replace"))
            if line.startswith(b"{") and (event := json.loads(line)).get("event") == "server.listening":
                url = str(event["url"])

        async def drain() -> None:  # a full pipe would block the server's logging
            while chunk := await stderr.readline():
                lines.append(chunk.decode(errors="replace"))

        drainer = asyncio.create_task(drain())
        yield url
        process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            pytest.fail(
                f"the server did not stop within {timeout:.0f} s of SIGTERM:\n" + "".join(lines[-40:])
            )
        assert code == 0, f"the server exited {code} on SIGTERM:\n" + "".join(lines[-40:])
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if drainer is not None:
            drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drainer
