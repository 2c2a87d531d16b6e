"""/healthz latency while 10 MiB template archives are pushed: whether the archive check holds the event loop.

    python bench/healthz_during_push.py [--pushes 5] [--daemons 0] [--in-process]

Starts the real `prebuildd server` as a subprocess (embedded PostgreSQL in a temporary data directory), measures
/healthz every 10 ms while idle, then while it pushes ``--pushes`` archives of ~10 MiB (incompressible, just under
the upload limit) one after another, then while it pushes archive bombs (50,000 empty entries; ~1 MiB inflating to
1 GiB), and prints p50/p99/max of each phase. ``--daemons N`` runs N embedded daemons, so each push's import
(which unpacks the archive) happens meanwhile too. ``--in-process`` runs the server in this process instead and
adds the longest stall of its event loop per phase, measured by a watchdog thread that pings the loop every 5 ms:
on a machine shared with other work, /healthz latency also counts the scheduler's delays. The stall also counts
waits for the GIL: while the check thread parses an archive's headers in Python (the 50,000-entry bomb), the loop
and the watchdog take turns with it, so that phase shows GIL contention rather than the loop being held. Not a
test.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import signal
import statistics
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import httpx

from prebuildd.templates.archive import MAX_TEMPLATE_BYTES, pack_directory

MANIFEST = 'provisioner = "echo"\n'


def archive(work: Path) -> bytes:
    directory = work / "template"
    directory.mkdir()
    (directory / "prebuildd.toml").write_text(MANIFEST)
    (directory / "blob.bin").write_bytes(os.urandom(MAX_TEMPLATE_BYTES - 64 * 1024))
    return pack_directory(directory)


def _member(name: str, content: bytes = b"") -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info.tobuf(tarfile.PAX_FORMAT) + content + b"\0" * (-len(content) % tarfile.BLOCKSIZE)


def many_entries(count: int = 50_000) -> bytes:
    tar = _member("prebuildd.toml", MANIFEST.encode()) + b"".join(_member(f"f{i}") for i in range(count))
    return gzip.compress(tar + b"\0" * 1024, mtime=0)


def inflating_to_a_gibibyte() -> bytes:
    """A file header claiming 1 GiB, then 1 GiB of zeros as 128 gzip members of 8 MiB (~1 MiB in all)."""
    info = tarfile.TarInfo("zeros.bin")
    info.size = 1024**3
    head = _member("prebuildd.toml", MANIFEST.encode()) + info.tobuf(tarfile.PAX_FORMAT)
    return gzip.compress(head, mtime=0) + gzip.compress(b"\0" * (8 << 20), mtime=0) * 128


async def start_server(work: Path, daemons: int) -> tuple[asyncio.subprocess.Process, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "prebuildd",
        "server",
        "--data-dir",
        str(work / "data"),
        "--http-address",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--provisioner-daemons",
        str(daemons),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("PREBUILDD_")},
    )
    assert process.stderr is not None
    try:
        while True:
            line = await asyncio.wait_for(process.stderr.readline(), 120)
            if not line:
                raise RuntimeError("the server exited before listening")
            if line.startswith(b"{") and (event := json.loads(line))["event"] == "server.listening":
                url = str(event["url"])
                break
        token_file = work / "data" / "owner-token"
        for _ in range(500):
            if token_file.exists():
                break
            await asyncio.sleep(0.01)
        token = token_file.read_text().strip()
    except BaseException:
        process.send_signal(signal.SIGTERM)
        await process.wait()
        raise
    _DRAINS.add(asyncio.create_task(_drain(process.stderr)))
    return process, url, token


_DRAINS: set[asyncio.Task[None]] = set()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def poll(client: httpx.AsyncClient, until: asyncio.Event, samples: list[float]) -> None:
    while not until.is_set():
        started = time.perf_counter()
        response = await client.get("/healthz")
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
        await asyncio.sleep(0.01)


BOMBS: list[bytes] = []


class LoopWatchdog:
    """The longest time the event loop took to run a callback scheduled from another thread, per phase."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.phase = "idle"
        self.longest: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            answered = threading.Event()
            started = time.perf_counter()
            self.loop.call_soon_threadsafe(answered.set)
            answered.wait()
            lag = (time.perf_counter() - started) * 1000
            self.longest[self.phase] = max(self.longest.get(self.phase, 0.0), lag)
            time.sleep(0.005)

    def __enter__(self) -> LoopWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"{name:<14} n={len(samples):<5} p50={statistics.median(ordered):6.1f} ms  p99={p99:6.1f} ms  "
        f"max={ordered[-1]:6.1f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pushes", type=int, default=5)
    parser.add_argument("--daemons", type=int, default=0)
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prebuildd-healthz-"))
    data = archive(work)
    BOMBS.extend((many_entries(), inflating_to_a_gibibyte()))  # built before the server shares this loop
    if args.in_process:
        from prebuildd.runtime.config import ServerConfig
        from prebuildd.server.process import Server

        config = ServerConfig(
            data_dir=work / "data", http_address="127.0.0.1:0", provisioner_daemons=args.daemons
        )
        server = Server(config)
        await server.start()
        url, token = server.url, (work / "data" / "owner-token").read_text().strip()
        try:
            with LoopWatchdog(asyncio.get_running_loop()) as watchdog:
                await phases(args, data, url, token, watchdog)
            print(
                "longest event-loop stall: "
                + ", ".join(f"{k} {v:.1f} ms" for k, v in watchdog.longest.items())
            )
        finally:
            await server.stop()
        return
    process, url, token = await start_server(work, args.daemons)
    try:
        await phases(args, data, url, token, None)
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()


async def phases(
    args: argparse.Namespace, data: bytes, url: str, token: str, watchdog: LoopWatchdog | None
) -> None:
    def phase(name: str) -> None:
        if watchdog is not None:
            watchdog.phase = name

    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as health,
        httpx.AsyncClient(base_url=url, timeout=120, headers={"Authorization": f"Bearer {token}"}) as api,
    ):
        phase("warm-up")  # the first requests import and build what later ones reuse
        assert (await health.get("/healthz")).status_code == 200
        assert (await api.get("/api/v1/templates")).status_code == 200
        phase("idle")
        idle: list[float] = []
        stop = asyncio.Event()
        poller = asyncio.create_task(poll(health, stop, idle))
        await asyncio.sleep(2)
        stop.set()
        await poller

        phase("push")
        during: list[float] = []
        stop = asyncio.Event()
        poller = asyncio.create_task(poll(health, stop, during))
        push_ms = []
        for i in range(args.pushes):
            started = time.perf_counter()
            response = await api.post(
                f"/api/v1/templates/big-{i}/versions",
                content=data,
                headers={"Content-Type": "application/gzip"},
            )
            push_ms.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 201, response.text
        if args.daemons:
            await asyncio.sleep(2)  # the imports (unpacking each archive) run after the pushes answer
        stop.set()
        await poller

        phase("bombs")
        bombs: list[float] = []
        stop = asyncio.Event()
        poller = asyncio.create_task(poll(health, stop, bombs))
        refusals = []
        for bomb in (many_entries(), inflating_to_a_gibibyte()) * 3:
            started = time.perf_counter()
            response = await api.post(
                "/api/v1/templates/bomb/versions",
                content=bomb,
                headers={"Content-Type": "application/gzip"},
            )
            refusals.append(((time.perf_counter() - started) * 1000, response.status_code))
        stop.set()
        await poller
    print(f"archive {len(data) / 2**20:.1f} MiB, {args.pushes} pushes, {args.daemons} embedded daemons")
    print(f"push           p50={statistics.median(push_ms):6.1f} ms  max={max(push_ms):6.1f} ms")
    print(summary("healthz idle", idle))
    print(summary("healthz push", during))
    answers = ", ".join(f"{status} in {ms:.0f} ms" for ms, status in refusals)
    print(f"bombs          {answers}")
    print(summary("healthz bombs", bombs))


if __name__ == "__main__":
    asyncio.run(main())
