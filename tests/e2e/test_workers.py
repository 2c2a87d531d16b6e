"""`prebuildd server --workers 2`: two API worker processes on one port, each its own replica of the database.

Coalesced claims served by both workers never hand one prebuild to two users, a token revoked through one worker
is refused by every worker at once, and a worker that dies is restarted by the server's supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from prebuildd.domain.identity import PREBUILDS_USER_ID
from tests.support.api import API, push, user_with_token, wait_imported
from tests.support.server import RunningServer, start_server
from tests.support.waiting import wait_for

POOL = """
provisioner = "echo"
[[presets]]
name = "warm"
[presets.prebuilds]
instances = {n}
"""


@pytest.fixture
async def two_workers(database_url: str, tmp_path: Path) -> AsyncIterator[RunningServer]:
    running = await start_server(
        database_url, tmp_path / "server", workers=2, provisioner_daemons=4, reconcile_interval=3600.0
    )
    try:
        await wait_for(lambda: _ready(running.url), timeout=60, what="both API workers to answer")
        yield running
    finally:
        await running.server.stop()


async def _ready(url: str) -> bool:
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            return (await client.get("/readyz")).status_code == 200
    except httpx.TransportError:
        return False


async def pinned_clients(running: RunningServer, workers: int = 2) -> dict[str, httpx.AsyncClient]:
    """One keep-alive client per worker (a connection stays with the worker that accepted it), by replica."""
    found: dict[str, httpx.AsyncClient] = {}

    async def one_more() -> bool:
        client = running.client()
        replica = (await client.get("/healthz")).json()["replica"]
        if replica in found:
            await client.aclose()
        else:
            found[replica] = client
        return len(found) == workers

    await wait_for(one_more, timeout=60, what=f"a connection to each of {workers} workers")
    return found


async def connections_per_worker(
    running: RunningServer, replicas: list[str], count: int
) -> list[list[httpx.AsyncClient]]:
    """``count`` keep-alive clients connected to each worker, checked together just before they are used: a
    connection idle past the server's keep-alive timeout is closed, and its client's next request may land on
    the other worker (on a loaded machine, the first clients idle while the last ones are being connected)."""
    while True:
        slots: list[list[httpx.AsyncClient]] = [[] for _ in replicas]
        while min(len(slot) for slot in slots) < count:
            client = running.client()
            slot = slots[replicas.index((await client.get("/healthz")).json()["replica"])]
            if len(slot) < count:
                slot.append(client)
            else:
                await client.aclose()
        pinned = [(i, c) for i, slot in enumerate(slots) for c in slot]
        answers = await asyncio.gather(*(c.get("/healthz") for _, c in pinned))
        if all(a.json()["replica"] == replicas[i] for (i, _), a in zip(pinned, answers, strict=True)):
            return slots
        await asyncio.gather(*(c.aclose() for _, c in pinned))


async def _close(clients: dict[str, httpx.AsyncClient]) -> None:
    await asyncio.gather(*(c.aclose() for c in clients.values()))


async def test_coalesced_claims_across_two_workers_never_share_a_prebuild(
    two_workers: RunningServer, tmp_path: Path, database_url: str
) -> None:
    running = two_workers
    clients = await pinned_clients(running)
    try:
        assert all(replica.endswith(("-w0", "-w1")) for replica in clients)
        some = next(iter(clients.values()))
        assert (await push(some, tmp_path, "pool", POOL.replace("{n}", "30"), activate=True)).is_success
        await wait_imported(some, "pool", "v1")

        async def pool_ready() -> bool:
            status = (await some.get(f"{API}/prebuilds/status")).json()["presets"]
            return bool(status and status[0]["eligible"] == 30)

        await wait_for(pool_ready, timeout=120, what="30 ready prebuilds")
        # 24 claimers per worker at once, each on a connection of its own (a second request on a client busy
        # with one opens a new connection, which may land on either worker)
        per_worker = await connections_per_worker(running, sorted(clients), 24)
        try:

            async def claim(i: int) -> httpx.Response:
                client = per_worker[i % 2][i // 2]
                return await client.post(
                    f"{API}/workspaces", json={"name": f"dev{i}", "template": "pool", "preset": "warm"}
                )

            responses = await asyncio.gather(*(claim(i) for i in range(48)))
        finally:
            await asyncio.gather(*(c.aclose() for slot in per_worker for c in slot))
        assert all(r.status_code == 201 for r in responses), [
            r.text for r in responses if r.status_code != 201
        ]
        bodies = [r.json() for r in responses]
        claimed = [b for b in bodies if b["claimed"]]
        # every prebuild claimed (and perhaps a replacement that became ready meanwhile), the others built cold
        assert len(claimed) >= 30
        assert len({b["id"] for b in bodies}) == 48  # nobody shares a workspace
        by_id = {b["id"]: b["name"] for b in claimed}
        assert len(by_id) == len(claimed)

        # the database agrees: one claim event per prebuild, each to the workspace's one owner and name
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            cur = await conn.execute(
                "SELECT e.workspace_id::text, w.name, w.owner_id FROM events e JOIN workspaces w "
                "ON w.id = e.workspace_id WHERE e.kind = 'claim.succeeded'"
            )
            rows = await cur.fetchall()
        assert Counter(r[0] for r in rows) == Counter(by_id.keys())
        assert {r[0]: r[1] for r in rows} == by_id
        assert PREBUILDS_USER_ID not in {r[2] for r in rows}

        # both workers claimed, and claims were coalesced (fewer statements than claims)
        found: dict[str, float] = {}

        async def both_workers_counted() -> bool:
            # a worker too busy to answer the server's scrape in time is left out of that one scrape
            per_worker_claims: dict[str, float] = {}
            statements = requests = 0.0
            for family in text_string_to_metric_families((await some.get("/metrics")).text):
                for sample in family.samples:
                    if sample.name == "prebuildd_prebuilds_claimed_total":
                        worker = sample.labels.get("worker", "")
                        per_worker_claims[worker] = per_worker_claims.get(worker, 0) + sample.value
                    if sample.name == "prebuildd_claim_statement_requests_count":
                        statements += sample.value
                    if sample.name == "prebuildd_claim_statement_requests_sum":
                        requests += sample.value
            found.update(per_worker_claims, statements=statements, requests=requests)
            return set(per_worker_claims) == {"0", "1"}

        await wait_for(both_workers_counted, timeout=60, what="both workers' claim counters in /metrics")
        assert found["0"] + found["1"] == len(claimed)
        assert (
            found["requests"] == 48 and found["statements"] < found["requests"]
        )  # every request tried a claim
    finally:
        await _close(clients)


async def test_a_revoked_token_is_refused_by_every_worker(two_workers: RunningServer) -> None:
    running = two_workers
    secret = await user_with_token(running, "alice")
    clients = await pinned_clients(running)
    try:
        auth = {"Authorization": f"Bearer {secret}"}
        for client in clients.values():
            assert (await client.get(f"{API}/users/me", headers=auth)).status_code == 200
        tokens = (await next(iter(clients.values())).get(f"{API}/tokens", headers=auth)).json()
        [token] = [t for t in tokens if t.get("revoked_at") is None]
        first, second = clients.values()
        revoked = await first.delete(f"{API}/tokens/{token['id']}", headers=auth)
        assert revoked.status_code in (200, 204), revoked.text
        # at once, on both workers: no wait, no retry
        answers = await asyncio.gather(*(c.get(f"{API}/users/me", headers=auth) for c in (first, second)))
        assert [a.status_code for a in answers] == [401, 401]
    finally:
        await _close(clients)


async def test_a_worker_that_dies_is_restarted(two_workers: RunningServer) -> None:
    running = two_workers
    server = running.server
    victim = server._workers[0].process
    assert victim is not None and victim.returncode is None
    os.kill(victim.pid, signal.SIGKILL)

    async def restarted() -> bool:
        health = server.tasks["worker-0"]
        again = server._workers[0].process
        return (
            health.restarts == 1
            and again is not None
            and again.pid != victim.pid
            and await _ready(running.url)
        )

    await wait_for(restarted, timeout=60, what="worker 0 to be restarted")
    clients = await pinned_clients(running)
    try:
        metrics = (await next(iter(clients.values())).get("/metrics")).text
    finally:
        await _close(clients)
    assert 'prebuildd_task_restarts_total{task="worker-0"} 1.0' in metrics
