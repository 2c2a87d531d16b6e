"""Sustained HTTP claims: a steady arrival rate of `POST /api/v1/workspaces` against a real `prebuildd server`
(its own process tree, embedded PostgreSQL) from a client in a process of its own, while the pool refills (echo
start 2 s); latency percentiles, the server's CPU per claim, and the PostgreSQL's.

    python bench/claim_sustained.py [--rate 150] [--seconds 20] [--runs new:1,new:2] [--old-src DIR]

Each run is `LABEL:WORKERS`: `new` runs this checkout's sources, `old` the sources in --old-src (a checkout of an
earlier commit, with `--workers` only when it has it); a trailing `+` (`new+`) adds --extra-path to the run's path. Runs go one after the other on fresh data directories, in
the order given, so that old and new see the same machine within minutes. Not a test.

Latency "on the wire" runs from the request's send on a free keep-alive connection (128 of them) to its answer;
"from arrival" from the moment the request was due (open loop), so it includes the wait for a connection when
the server falls behind the offered rate: that is what a user arriving then would wait.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from prebuildd.templates.archive import pack_directory

TEMPLATE = """
provisioner = "echo"
[echo]
start = { delay = "2s" }
"""
PRESET = """
[[presets]]
name = "warm{i}"
parameters = {{ which = "{i}" }}
[presets.prebuilds]
instances = {n}
"""
PARAMETER = """
[[parameters]]
name = "which"
default = "0"
"""
PER_PRESET = 1000
"""A preset's pool is at most 1,000: a larger pool is several presets, the client's claims spread over them."""


def manifest(pool: int) -> tuple[str, int]:
    presets = -(-pool // PER_PRESET)
    body = TEMPLATE + PARAMETER
    for i in range(presets):
        body += PRESET.format(i=i, n=min(PER_PRESET, pool - i * PER_PRESET))
    return body, presets


TICKS = os.sysconf("SC_CLK_TCK")
SRC = Path(__file__).resolve().parent.parent / "src"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (its own, not its children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                children = [int(c) for c in (task / "children").read_text().split()]
                found.extend(children)
                todo.extend(children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def tree_cpu(pid: int, pgdata: Path) -> dict[str, float]:
    """CPU so far of the server's process tree (prebuildd's processes) and of its embedded PostgreSQL's."""
    totals = {"prebuildd": 0.0, "workers": 0.0, "postgres": 0.0}
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    for kind, root in (("prebuildd", pid), ("postgres", postmaster)):
        for p in [root, *descendants(root)]:
            try:
                cmdline = Path(f"/proc/{p}/cmdline").read_bytes()[:300]
                if kind == "prebuildd" and b"postgres" in cmdline:
                    continue
                cpu = cpu_seconds(p)
            except (FileNotFoundError, ProcessLookupError):
                continue
            totals[kind] += cpu
            if b"worker_process" in cmdline:
                totals["workers"] += cpu  # the API workers' share (the rest: reconciler, daemons, refill)
    return totals


class Connection:
    """One keep-alive HTTP/1.1 connection with the least client work per request (httpx costs several ms of
    CPU per request, which on two cores would be taken from the server being measured)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def post(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)


def client_process(
    url: str, token: str, rate: float, seconds: float, prefix: str, presets: int, out: Any
) -> None:
    """The client, in its own process: one request every 1/rate s (open loop), each on a pooled connection."""
    host, port = url.removeprefix("http://").split(":")

    def request(name: str, preset: int) -> bytes:
        body = f'{{"name":"{name}","template":"bench","preset":"warm{preset}"}}'.encode()
        return (
            f"POST /api/v1/workspaces HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def run() -> None:
        latencies: list[float] = []
        arrivals: list[float] = []
        lags: list[float] = []
        failures: list[str] = []
        claimed = 0
        idle: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(128):
            idle.put_nowait(Connection(*await asyncio.open_connection(host, int(port))))
        total = int(rate * seconds)
        cpu = time.process_time()
        start = time.perf_counter() + 0.5

        async def one(i: int) -> None:
            nonlocal claimed
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            connection = await idle.get()
            began = time.perf_counter()
            lags.append(began - due)
            try:
                status, body = await connection.post(request(f"{prefix}{i}", i % presets))
            except (OSError, asyncio.IncompleteReadError) as exc:
                failures.append(type(exc).__name__)
                idle.put_nowait(Connection(*await asyncio.open_connection(host, int(port))))
                return
            idle.put_nowait(connection)
            done = time.perf_counter()
            latencies.append(done - began)
            arrivals.append(done - due)  # what a user arriving at that moment waits: queueing included
            if status != 201:
                failures.append(str(status))
            elif b'"claimed":true' in body:
                claimed += 1

        await asyncio.gather(*(one(i) for i in range(total)))
        elapsed = time.perf_counter() - start
        out.send(
            {
                "latencies": latencies,
                "arrivals": arrivals,
                "lags": lags,
                "failures": failures,
                "claimed": claimed,
                "elapsed": elapsed,
                "client_cpu": time.process_time() - cpu,
            }
        )

    asyncio.run(run())


async def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.3)
    raise SystemExit(f"{url} did not become ready")


async def eligible(client: httpx.AsyncClient) -> int:
    presets = (await client.get("/api/v1/prebuilds/status")).json()["presets"]
    return sum(int(p["eligible"]) for p in presets)


async def one_run(label: str, src: Path, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="prebuildd-sustained-"))
    port = free_port()
    pool = int(args.rate * args.seconds) + 200
    command = [
        sys.executable,
        "-c",
        "from prebuildd.cli import main; main()",
        "server",
        f"--data-dir={data / 'server'}",
        f"--http-address=127.0.0.1:{port}",
        f"--provisioner-daemons={args.daemons}",
        "--reconcile-interval=1h",
        "--max-inflight-prebuild-jobs=1000",
        "--log-level=warning",
    ]
    if workers > 1:
        command.append(f"--workers={workers}")
    path = [str(src)] + ([str(args.extra_path)] if label.endswith("+") and args.extra_path else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url)
        token = (data / "server" / "owner-token").read_text().strip()
        template = data / "template"
        template.mkdir()
        text, presets = manifest(pool)
        (template / "prebuildd.toml").write_text(text)
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as c:
            pushed = await c.post(
                "/api/v1/templates/bench/versions",
                params={"activate": True},
                content=pack_directory(template),
                headers={"Content-Type": "application/gzip"},
            )
            assert pushed.status_code == 201, pushed.text
            fill_started = time.monotonic()
            while (n := await eligible(c)) < pool:
                if time.monotonic() - fill_started > args.fill_timeout:
                    raise SystemExit(f"{label}: the pool reached {n} of {pool} in {args.fill_timeout:.0f} s")
                await asyncio.sleep(2)
            fill = time.monotonic() - fill_started
        pgdata = next((data / "server").rglob("postmaster.pid")).parent
        receive, send = multiprocessing.Pipe(duplex=False)
        before = tree_cpu(server.pid, pgdata)
        spy = None
        if args.py_spy is not None:  # samples the server's process while the claims run (raw folded stacks)
            out = Path(f"{args.py_spy}-{label}{workers}.txt")
            spy = subprocess.Popen(
                [
                    str(args.py_spy_bin),
                    "record",
                    "--pid",
                    str(server.pid),
                    "--duration",
                    str(int(args.seconds)),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        client = multiprocessing.get_context("spawn").Process(
            target=client_process,
            args=(url, token, args.rate, args.seconds, f"{label.replace('+', 'x')}{workers}-", presets, send),
        )
        client.start()
        result: dict[str, Any] = await asyncio.to_thread(receive.recv)
        after = tree_cpu(server.pid, pgdata)
        client.join()
        if spy is not None:
            spy.wait(60)
        result.update(
            label=label,
            workers=workers,
            pool=pool,
            fill=fill,
            server_cpu=after["prebuildd"] - before["prebuildd"],
            postgres_cpu=after["postgres"] - before["postgres"],
            worker_cpu=after["workers"] - before["workers"],
        )
        return result
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data, ignore_errors=True)


def report(r: dict[str, Any], rate: float) -> str:
    n = len(r["latencies"])
    lat = r["latencies"] or [0.0]
    arr = r["arrivals"] or [0.0]
    return (
        f"| {r['label']} | {r['workers']} | {rate:g}/s | {n / r['elapsed']:.0f}/s | {n} | {r['claimed']} | "
        f"{len(r['failures'])} | {pct(lat, 0.5):.1f} ms | {pct(lat, 0.99):.1f} ms | {pct(arr, 0.5):.0f} ms | "
        f"{pct(arr, 0.99):.0f} ms | "
        f"{r['server_cpu'] / max(n, 1) * 1000:.2f} ms | {r['worker_cpu'] / max(n, 1) * 1000:.2f} ms | "
        f"{r['postgres_cpu'] / max(n, 1) * 1000:.2f} ms | "
        f"{r['client_cpu'] / max(n, 1) * 1000:.2f} ms | {pct(r['lags'] or [0.0], 0.99):.0f} ms |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=150.0, help="claims per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", default="new:1,new:2", help="LABEL:WORKERS, comma-separated")
    parser.add_argument("--old-src", type=Path, help="the src/ of an older checkout, for runs labelled old")
    parser.add_argument("--daemons", type=int, default=32, help="embedded daemons (the refill)")
    parser.add_argument("--fill-timeout", type=float, default=900.0)
    parser.add_argument(
        "--py-spy", type=Path, help="sample the server's process with py-spy while claims run: PATH-LABEL.txt"
    )
    parser.add_argument(
        "--extra-path",
        type=Path,
        help="a directory of packages put on the path of runs labelled with a trailing + (new+: this checkout with "
        "optional packages, e.g. `pip install --target DIR httptools`)",
    )
    parser.add_argument("--py-spy-bin", type=Path, default=Path("py-spy"), help="the py-spy executable")
    args = parser.parse_args()
    here = SRC
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average {os.getloadavg()[0]:.1f}; echo start 2 s; "
        f"{args.rate:g} claims/s for {args.seconds:g} s",
        flush=True,
    )
    header = (
        "| run | workers | offered | served | requests | claimed | failed | p50 on the wire | p99 on the wire | "
        "p50 from arrival | p99 from arrival | server CPU/claim | of which API workers | PostgreSQL CPU/claim | "
        "client CPU/claim | client lag p99 |\n|" + "--|" * 16
    )
    rows = []
    for run in args.runs.split(","):
        label, workers = run.split(":")
        src = here if label.startswith("new") else args.old_src
        if src is None:
            raise SystemExit("--old-src is needed for runs labelled old")
        result = await one_run(label, src, int(workers), args)
        rows.append(report(result, args.rate))
        print(f"{label}:{workers}: pool of {result['pool']} filled in {result['fill']:.0f} s", flush=True)
        print(rows[-1], flush=True)
        if result["failures"]:
            kinds = Counter(result["failures"]).most_common(5)
            print(f"{label}:{workers}: failures: " + ", ".join(f"{k} ×{n}" for k, n in kinds), flush=True)
    print(header)
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
