"""Users and API tokens over HTTP: owners create users and their tokens, secrets are shown once and stored
hashed, revoked tokens and suspended users are refused, and the last owner cannot lock everyone out."""

from __future__ import annotations

import hashlib

from prebuildd.store.rows import fetch_all
from tests.support.api import API, user_with_token
from tests.support.server import RunningServer


async def test_owner_creates_a_member_and_a_token_for_them(running_server: RunningServer) -> None:
    async with running_server.client() as owner:
        created = await owner.post(f"{API}/users", json={"username": "alice", "email": "alice@example.com"})
        assert created.status_code == 201, created.text
        alice = created.json()
        assert (alice["username"], alice["role"], alice["suspended"]) == ("alice", "member", False)
        taken = await owner.post(f"{API}/users", json={"username": "ALICE"})
        assert taken.status_code == 409 and "taken" in taken.json()["message"]
        bad = await owner.post(f"{API}/users", json={"username": "no spaces"})
        assert bad.status_code == 400 and "invalid user name" in bad.json()["message"]
        bad_role = await owner.post(f"{API}/users", json={"username": "bob", "role": "root"})
        assert bad_role.status_code == 400 and bad_role.json()["detail"][0]["field"] == "role"

        issued = await owner.post(
            f"{API}/tokens", json={"name": "laptop", "username": "alice", "lifetime_seconds": 3600}
        )
        assert issued.status_code == 201, issued.text
        token = issued.json()
        assert token["token"]["user_id"] == alice["id"] and token["token"]["expires_at"] is not None
        assert (await owner.post(f"{API}/tokens", json={"name": "x", "username": "ghost"})).status_code == 404
        assert (
            await owner.post(f"{API}/tokens", json={"name": "x", "username": "prebuilds"})
        ).status_code == 404
        users = [u["username"] for u in (await owner.get(f"{API}/users")).json()]
        assert users == ["admin", "alice"]  # the prebuilds system user is not a user one manages

    async with running_server.client(token["secret"]) as client:
        me = (await client.get(f"{API}/users/me")).json()
        assert me["username"] == "alice" and me["email"] == "alice@example.com"


async def test_a_token_secret_is_shown_once_stored_hashed_and_refused_once_revoked(
    running_server: RunningServer,
) -> None:
    first = await user_with_token(running_server, "alice")
    async with running_server.client(first) as client:
        created = await client.post(f"{API}/tokens", json={"name": "ci"})
        assert created.status_code == 201
        second = created.json()
        assert second["secret"].startswith("pbt_")
        listed = (await client.get(f"{API}/tokens")).json()
        assert [t["name"] for t in listed] == ["test", "ci"]
        assert second["secret"] not in str(listed)

    services = running_server.server.services
    assert services is not None
    async with services.db.transaction() as conn:
        rows = await fetch_all(conn, "auth.tokens_of_user", {"user_id": listed[0]["user_id"]})
        cur = await conn.execute("SELECT token_hash FROM api_tokens WHERE id = %s", (second["token"]["id"],))
        stored = await cur.fetchone()
    assert len(rows) == 2
    assert (
        stored is not None
        and bytes(stored["token_hash"]) == hashlib.sha256(second["secret"].encode()).digest()
    )

    async with running_server.client() as owner:  # an owner may revoke anyone's token
        assert (await owner.delete(f"{API}/tokens/{second['token']['id']}")).status_code == 204
        assert (await owner.delete(f"{API}/tokens/{second['token']['id']}")).status_code == 404
        mine = (await owner.get(f"{API}/tokens")).json()
    async with running_server.client(second["secret"]) as client:
        assert (await client.get(f"{API}/users/me")).status_code == 401
    async with running_server.client(first) as client:
        revoked = [t for t in (await client.get(f"{API}/tokens")).json() if t["name"] == "ci"]
        assert revoked[0]["revoked_at"] is not None
        # A member cannot revoke someone else's token: it is not theirs to see.
        assert (await client.delete(f"{API}/tokens/{mine[0]['id']}")).status_code == 404


async def test_suspension_and_the_last_owner(running_server: RunningServer) -> None:
    member = await user_with_token(running_server, "alice")
    async with running_server.client() as owner:
        suspended = await owner.patch(f"{API}/users/alice", json={"suspended": True})
        assert suspended.status_code == 200 and suspended.json()["suspended"] is True
        async with running_server.client(member) as client:
            assert (await client.get(f"{API}/users/me")).status_code == 401
        assert (await owner.patch(f"{API}/users/alice", json={"suspended": False})).status_code == 200
        async with running_server.client(member) as client:
            assert (await client.get(f"{API}/users/me")).status_code == 200

        for change in ({"role": "member"}, {"suspended": True}):
            refused = await owner.patch(f"{API}/users/admin", json=change)
            assert refused.status_code == 409 and "last active owner" in refused.json()["message"]
        assert (await owner.get(f"{API}/users/me")).json()["role"] == "owner"
        promoted = await owner.patch(f"{API}/users/alice", json={"role": "owner"})
        assert promoted.json()["role"] == "owner"
        assert (await owner.patch(f"{API}/users/prebuilds", json={"role": "owner"})).status_code == 404
        assert (await owner.patch(f"{API}/users/nobody", json={"role": "owner"})).status_code == 404
        # With a second owner, the first may step down in the organization; as the site owner, admin still
        # manages it, but suspending alice now would leave it without an active owner.
        assert (await owner.patch(f"{API}/users/admin", json={"role": "template-admin"})).status_code == 200
        orphaning = await owner.patch(f"{API}/users/alice", json={"suspended": True})
        assert orphaning.status_code == 409 and "last active owner of default" in orphaning.json()["message"]
        # alice, now the organization's only owner, is no site owner: pausing every organization is not hers.
        async with running_server.client(member) as alice:
            assert (await alice.get(f"{API}/users/me")).json()["role"] == "owner"
            paused = await alice.put(f"{API}/settings", json={"reconciliation_paused": True})
            assert paused.status_code == 403
