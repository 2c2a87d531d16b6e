"""``/metrics`` is site-wide operator data: it answers the --metrics-token and a site owner's API token, refuses
everyone else (401 without or with a bad token, 403 for another role), and is open only under --metrics-public.
Its per-preset series are labelled with the organization's name, not its id."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.server import start_server

API = "/api/v1"
METRICS_TOKEN = "m3trics-token-for-prometheus"


async def test_metrics_need_the_metrics_token_or_a_site_owner(database_url: str, tmp_path: Path) -> None:
    running = await start_server(database_url, tmp_path / "server", metrics_token=METRICS_TOKEN)
    try:
        async with running.client() as owner:
            tokens = {}
            # An organization's owner is not the site owner: /metrics covers every organization.
            for name, role in (("mia", "member"), ("tad", "template-admin"), ("olga", "owner")):
                assert (await owner.post(f"{API}/users", json={"username": name, "role": role})).is_success
                created = await owner.post(f"{API}/tokens", json={"name": "t", "username": name})
                tokens[role] = created.json()["secret"]
            assert (await owner.get("/metrics")).status_code == 200

        async with httpx.AsyncClient(base_url=running.url) as anyone:
            nobody = await anyone.get("/metrics")
            assert nobody.status_code == 401 and nobody.json()["code"] == "unauthenticated"
            assert "--metrics-token" in nobody.json()["message"]
            wrong = await anyone.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
            assert wrong.status_code == 401
            for role, secret in tokens.items():
                refused = await anyone.get("/metrics", headers={"Authorization": f"Bearer {secret}"})
                assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), role
            scraped = await anyone.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert scraped.status_code == 200 and "prebuildd_reconcile_duration_seconds" in scraped.text
            assert (await anyone.get("/healthz")).status_code == 200  # probes stay open
    finally:
        await running.server.stop()


async def test_metrics_public_serves_anyone(database_url: str, tmp_path: Path) -> None:
    running = await start_server(database_url, tmp_path / "server", metrics_public=True)
    try:
        async with httpx.AsyncClient(base_url=running.url) as anyone:
            assert (await anyone.get("/metrics")).status_code == 200
    finally:
        await running.server.stop()
