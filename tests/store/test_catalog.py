"""The template catalog and the identity rules as services, on a real PostgreSQL: each refusal with its code."""

from __future__ import annotations

from uuid import uuid4

import pytest

from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.identity import auth, users
from prebuildd.store.identity import User
from prebuildd.templates import catalog
from tests.support.env import Env

ECHO = 'provisioner = "echo"\n[[presets]]\nname = "p"\n'


async def _user(env: Env, username: str) -> User:
    return await users.user_named(env.db, env.org_id, username)


async def test_activation_needs_a_finished_import_and_kicks_only_on_change(env: Env) -> None:
    owner = await _user(env, "admin")
    kicks: list[str] = []
    await env.push("app", ECHO)
    pending = await env.push("app", ECHO, activate=False, run_import=False)
    with pytest.raises(PrebuilddError) as refused:
        await catalog.update_template(env.db, env.clock, kicks.append, owner, "app", active_version="v2")
    assert refused.value.code is ErrorCode.IMPORT_PENDING and "still importing" in refused.value.message
    await env.run_jobs()
    template = await catalog.update_template(
        env.db, env.clock, kicks.append, owner, "app", active_version="v2"
    )
    assert template.active_version == "v2" and template.active_version_id == pending.version_id
    await catalog.update_template(env.db, env.clock, kicks.append, owner, "app", active_version="v2")
    assert kicks == ["new active version"]  # activating the active version again changes nothing


async def test_deprecation_rules(env: Env) -> None:
    owner = await _user(env, "admin")
    kicks: list[str] = []
    await env.push("app", ECHO)
    with pytest.raises(PrebuilddError) as refused:
        await catalog.update_template(env.db, env.clock, kicks.append, owner, "app", deprecation_message="x")
    assert refused.value.code is ErrorCode.INVALID_REQUEST
    first = await catalog.update_template(
        env.db, env.clock, kicks.append, owner, "app", deprecated=True, deprecation_message="use web"
    )
    env.clock.advance(60)
    again = await catalog.update_template(
        env.db, env.clock, kicks.append, owner, "app", deprecation_message="use web2"
    )
    assert again.deprecated_at == first.deprecated_at and again.deprecation_message == "use web2"
    lifted = await catalog.update_template(env.db, env.clock, kicks.append, owner, "app", deprecated=False)
    assert lifted.deprecated_at is None and lifted.deprecation_message is None
    assert kicks == ["template deprecated", "template deprecation lifted"]


async def test_a_template_with_user_workspaces_is_not_deleted(env: Env) -> None:
    owner = await _user(env, "admin")
    kicks: list[str] = []
    pushed = await env.push("app", ECHO)
    await env.create(pushed.template_id, "mine")
    with pytest.raises(PrebuilddError) as refused:
        await catalog.delete_template(env.db, env.clock, kicks.append, owner, "app")
    assert refused.value.code is ErrorCode.CONFLICT and "alice/mine" in refused.value.message
    assert kicks == []
    with pytest.raises(PrebuilddError) as missing:
        await catalog.get_template(env.db, owner, "nope")
    assert missing.value.code is ErrorCode.NOT_FOUND


async def test_the_last_active_owner_stays_and_tokens_follow_roles(env: Env) -> None:
    member = await _user(env, "alice")
    owner = await _user(env, "admin")
    with pytest.raises(PrebuilddError) as refused:
        await users.update_user(env.db, env.clock, owner, "admin", role="member", suspended=None)
    assert refused.value.code is ErrorCode.CONFLICT and "last active owner" in refused.value.message
    with pytest.raises(PrebuilddError) as taken:
        await users.add_user(env.db, env.clock, owner, username="ALICE", role="member", email="")
    assert taken.value.code is ErrorCode.CONFLICT
    with pytest.raises(PrebuilddError) as forbidden:
        await auth.issue_token(env.db, env.clock, member, name="t", username="admin")
    assert forbidden.value.code is ErrorCode.FORBIDDEN
    token, secret = await auth.issue_token(env.db, env.clock, member, name="t")
    holder = await auth.user_for_token(env.db, env.clock, secret)
    assert holder is not None and holder.id == member.id
    assert [t.id for t in await auth.tokens_of(env.db, member)] == [token.id]
    await auth.revoke_token(env.db, env.clock, member, token.id)
    assert await auth.user_for_token(env.db, env.clock, secret) is None
    with pytest.raises(PrebuilddError) as gone:
        await auth.revoke_token(env.db, env.clock, member, uuid4())
    assert gone.value.code is ErrorCode.NOT_FOUND
