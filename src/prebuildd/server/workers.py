"""`prebuildd server --workers N`: N API worker processes serving one listening socket, supervised by the server.

The server's own process binds the port, keeps the database (the embedded PostgreSQL too), the reconciler, the
stale-job reaper and the embedded daemons, and starts N workers that inherit the socket: the kernel spreads the
connections over them, so claims use every core. Each worker is a replica of the same database with its own
replica identity (``runtime.identities.hold_worker_identity``) and runs only the API (its claim line, its pool,
its LISTEN connection); it kicks the server's reconciler by NOTIFY. A worker that exits is restarted by the
server's supervisor with backoff (``server.task_crashed``, ``prebuildd_task_restarts_total{task="worker-<i>"}``);
SIGTERM to the server stops the workers first (each finishes its requests), then the rest. A worker whose server
is gone (kill -9) stops by itself.

``/metrics`` and ``/readyz`` are answered by whichever worker took the connection, for the whole server: the
server's process and each worker serve a private Unix socket in a run directory of their own (mode 0700); a
worker asks the server, and the server adds every worker's counters and histograms to its own, labelled
``worker="<i>"`` (a worker that does not answer within ``METRICS_TIMEOUT`` is left out of that scrape). ``/readyz`` is the worker's database check plus the server's checks (daemons, reconciler).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from prebuildd.runtime.config import ServerConfig

log = structlog.get_logger(__name__)

SERVER_SOCKET = "server.sock"
ASK_TIMEOUT = 0.8
"""A private request's bound (within /readyz's own)."""
METRICS_TIMEOUT = 2.5
"""How long the server waits for each worker's metrics (a worker asks the server for 1 s more): well within
Prometheus' default scrape timeout of 10 s, even on a machine busy enough to starve a worker for a while."""
WORKER_GAUGES = frozenset({"prebuildd_component_down"})
"""The only gauges a worker reports: the others (pools, queue, reconciler, daemons) are the server's."""


def worker_socket(index: int) -> str:
    return f"worker-{index}.sock"


@dataclass(frozen=True)
class WorkerRole:
    """What makes a server process an API worker: its index, the inherited socket, the private run directory."""

    index: int
    fd: int
    run_dir: Path
    parent_pid: int


class WorkerExited(Exception):
    """A worker process ended while the server was not stopping (the supervisor restarts it)."""


# -- the private endpoint -------------------------------------------------------------------------------------

Handler = Callable[[], Awaitable[bytes]]


class PrivateEndpoint:
    """A Unix socket answering one word (``metrics``, ``ready``) with one body, then closing."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a previous run of this worker that was killed
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(ASK_TIMEOUT * 2):
                word = (await reader.readline()).decode("ascii", "replace").strip()
                handler = self.handlers.get(word)
                writer.write(await handler() if handler is not None else b"")
                await writer.drain()
        except Exception as exc:
            log.warning("server.private_request_failed", path=str(self.path), error=str(exc))
        finally:
            writer.close()


async def ask(path: Path, word: str, timeout: float = ASK_TIMEOUT) -> bytes:
    """The body another process of this server answers to ``word``; raises OSError or TimeoutError."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(word.encode() + b"\n")
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()


# -- metrics of the whole server --------------------------------------------------------------------------------


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def merge_metrics(own: bytes, workers: dict[str, bytes]) -> bytes:
    """The server's exposition with each worker's counters and histograms added, labelled ``worker``."""
    families: dict[str, Metric] = {}
    for worker, text in [("", own), *sorted(workers.items())]:
        for family in text_string_to_metric_families(text.decode()):
            if worker and family.type == "gauge" and family.name not in WORKER_GAUGES:
                continue
            if worker and not any(sample.value for sample in family.samples):
                continue  # a loop that does not run in workers (reconcile durations): only the server's counts
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type)
            for sample in family.samples:
                labels = dict(sample.labels)
                if worker:
                    labels["worker"] = worker
                merged.add_sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families.values()))
    return generate_latest(registry)


# -- the server's side: one supervised child per worker ----------------------------------------------------------


class WorkerProcess:
    """Worker ``index`` as the server's supervisor runs it: ``run`` starts the process and returns only by
    raising (the process ended) or being canceled (the server stops: SIGTERM, then SIGKILL after ``grace``)."""

    def __init__(
        self, index: int, sock: socket.socket, config: ServerConfig, run_dir: Path, grace: float
    ) -> None:
        self.index = index
        self.sock = sock
        self.config = config
        self.run_dir = run_dir
        self.grace = grace
        self.process: asyncio.subprocess.Process | None = None

    async def run(self) -> None:
        fd = self.sock.fileno()
        process = self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "prebuildd.cli.worker_process",
            f"--index={self.index}",
            f"--fd={fd}",
            f"--run-dir={self.run_dir}",
            f"--parent={os.getpid()}",
            stdin=asyncio.subprocess.PIPE,
            pass_fds=(fd,),
            start_new_session=True,  # a terminal's Ctrl-C reaches the server, which stops the workers in order
        )
        assert process.stdin is not None
        # The configuration on stdin, not in the environment or argv: it holds the database URL.
        process.stdin.write(json.dumps(self.config.model_dump(mode="json")).encode())
        await process.stdin.drain()
        process.stdin.close()
        log.info("server.worker_started", worker=self.index, pid=process.pid)
        try:
            code = await process.wait()
        except asyncio.CancelledError:
            await self.terminate()
            raise
        raise WorkerExited(f"API worker {self.index} (pid {process.pid}) exited with status {code}")

    async def terminate(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self.grace):
                await process.wait()
        except TimeoutError:
            log.warning("server.worker_killed", worker=self.index, pid=process.pid, grace=self.grace)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        log.info("server.worker_stopped", worker=self.index, pid=process.pid, status=process.returncode)


async def worker_metrics(own: bytes, run_dir: Path, workers: int) -> bytes:
    """The whole server's metrics, from the server's process: its own and every worker that answers."""
    answers = await asyncio.gather(
        *(ask(run_dir / worker_socket(i), "metrics", timeout=METRICS_TIMEOUT) for i in range(workers)),
        return_exceptions=True,
    )
    found = {str(i): body for i, body in enumerate(answers) if isinstance(body, bytes) and body}
    return merge_metrics(own, found)


def readiness_body(results: dict[str, Any]) -> bytes:
    return json.dumps(results).encode()
