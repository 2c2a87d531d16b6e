"""Tenancy against the real database: a provisioner key's organization filters the acquire statement itself
(no agent token, no start for another organization's job), and users are found only in their organizations."""

from __future__ import annotations

from uuid import uuid4

import pytest

from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.identity import users
from prebuildd.store import identity as identity_store
from tests.support.env import Env

WITH_AGENT = 'provisioner = "echo"\nagents = ["main"]\n'


async def _other_org(env: Env) -> identity_store.Organization:
    async with env.db.transaction() as conn:
        return await identity_store.insert_organization(
            conn, id=uuid4(), name="other", display_name="", is_default=False, now=env.clock.now()
        )


async def test_a_key_of_another_organization_never_takes_the_job_nor_issues_its_agent_tokens(
    env: Env,
) -> None:
    pushed = await env.push("t", WITH_AGENT)
    created = await env.create(pushed.template_id, "ws")
    other = await _other_org(env)

    assert await env.queue.acquire("w", ["echo"], {}, organization_id=other.id) is None
    job = await env.job(created.job_id)
    assert (job["job_status"], job["started_at"], job["worker_id"]) == ("pending", None, None)
    assert await env.count("workspace_agents") == 0  # no token was issued for the foreign workspace

    acquired = await env.queue.acquire("w", ["echo"], {}, organization_id=env.org_id)
    assert acquired is not None and acquired.id == created.job_id
    assert acquired.build is not None and len(acquired.build.agent_tokens) == 1


async def test_users_are_found_and_listed_only_in_their_organizations(env: Env) -> None:
    other = await _other_org(env)
    bob = await users.create_user(env.db, env.clock, username="bob", role="owner", organization_id=other.id)
    assert bob.role == "owner" and bob.organization_id == other.id
    with pytest.raises(PrebuilddError) as hidden:
        await users.user_named(env.db, env.org_id, "bob")
    assert hidden.value.code is ErrorCode.NOT_FOUND
    assert {u.username for u in await users.list_users(env.db, bob)} == {"bob"}
    admin = await users.user_named(env.db, env.org_id, "admin")
    assert {u.username for u in await users.list_users(env.db, admin)} == {"admin", "alice"}
    # bob, owner of other, is not admin's owner: refused as if admin did not exist there.
    with pytest.raises(PrebuilddError) as refused:
        await users.set_member(env.db, env.clock, bob, "admin", "member")
    assert refused.value.code is ErrorCode.NOT_FOUND
