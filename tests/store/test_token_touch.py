"""A token's last use is recorded at most once a minute (no write on every request), and a revoked token is
refused on the very next request (nothing about tokens is cached)."""

from __future__ import annotations

from prebuildd.identity.auth import create_token, revoke_token, tokens_of, user_for_token
from tests.support.env import Env


async def test_last_use_is_touched_once_a_minute_and_a_revocation_is_immediate(env: Env) -> None:
    token, secret = await create_token(env.db, env.clock, user_id=env.member_id, name="t")
    first = env.clock.now()
    member = await user_for_token(env.db, env.clock, secret)
    assert member is not None and member.id == env.member_id

    async def last_used() -> object:
        [found] = [t for t in await tokens_of(env.db, member) if t.id == token.id]
        return found.last_used_at

    assert await last_used() == first
    env.clock.advance(30)
    assert (await user_for_token(env.db, env.clock, secret)) is not None
    assert await last_used() == first  # within the minute: not written again
    later = env.clock.advance(31)
    assert (await user_for_token(env.db, env.clock, secret)) is not None
    assert await last_used() == later

    await revoke_token(env.db, env.clock, member, token.id)
    assert await user_for_token(env.db, env.clock, secret) is None
