"""A token records when it was last used, at most one write per token per minute, also under concurrent
requests (the touch re-checks the time under the row lock)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from prebuildd.identity.auth import create_token, user_for_token
from prebuildd.runtime.clock import FakeClock
from prebuildd.store.db import Database
from tests.support.env import Env


async def _last_used(db: Database, token_id: object) -> datetime | None:
    async with db.transaction() as conn:
        cur = await conn.execute("SELECT last_used_at FROM api_tokens WHERE id = %s", (token_id,))
        row = await cur.fetchone()
    assert row is not None
    value: datetime | None = row["last_used_at"]
    return value


async def _writes(db: Database) -> int:
    async with db.transaction() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM token_touches")
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def test_last_use_is_written_at_most_once_a_minute(
    env: Env, clock: FakeClock, database_url: str
) -> None:
    db = env.db
    async with db.transaction() as conn:  # count the writes: a trigger of this test's database only
        await conn.execute("CREATE TABLE token_touches (at timestamptz)")
        await conn.execute(
            "CREATE FUNCTION count_touch() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO token_touches VALUES (NEW.last_used_at); RETURN NEW; END $$"
        )
        await conn.execute(
            "CREATE TRIGGER count_touch AFTER UPDATE OF last_used_at ON api_tokens "
            "FOR EACH ROW EXECUTE FUNCTION count_touch()"
        )
    token, secret = await create_token(db, clock, user_id=env.member_id, name="laptop")
    assert await _last_used(db, token.id) is None

    start = clock.now()
    assert (await user_for_token(db, clock, secret)) is not None
    assert await _last_used(db, token.id) == start and await _writes(db) == 1

    clock.advance(30)
    assert (await user_for_token(db, clock, secret)) is not None
    assert await _last_used(db, token.id) == start and await _writes(db) == 1, "no write within a minute"

    clock.advance(31)  # 61 s after the first use
    assert (await user_for_token(db, clock, secret)) is not None
    assert await _last_used(db, token.id) == start + timedelta(seconds=61) and await _writes(db) == 2

    # Twenty requests at once on twenty open connections, all reading the old time: one write.
    clock.advance(120)
    wide = await Database(database_url, min_size=20, max_size=20).open()
    try:
        users = await asyncio.gather(*(user_for_token(wide, clock, secret) for _ in range(20)))
    finally:
        await wide.close()
    assert all(user is not None for user in users)
    assert await _last_used(db, token.id) == clock.now() and await _writes(db) == 3
