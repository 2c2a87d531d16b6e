"""The snapshot's presets query is read positionally (a hot path): its columns must come in PresetRow's order.

A column added in the middle (or a field added to PresetRow without its column) would shift every value after
it into the wrong field without any error; this test names the first column out of place.
"""

from __future__ import annotations

from dataclasses import fields

from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.domain.snapshot import PresetRow
from prebuildd.store.sql import q
from tests.support.env import Env
from tests.support.pools import POOL


async def test_snapshot_presets_columns_come_in_preset_row_order(env: Env) -> None:
    await env.push("t", POOL)
    async with env.db.transaction() as conn, conn.cursor() as cur:
        await cur.execute(
            q("reconcile.snapshot_presets"), {"prebuilds_user_id": PREBUILDS_USER_ID, "now": env.clock.now()}
        )
        assert cur.description is not None
        columns = [c.name for c in cur.description]
        assert await cur.fetchall()  # the pushed pool is there: the test reads real rows
    wanted = [f.name for f in fields(PresetRow)]
    assert columns[: len(wanted)] == wanted
    assert columns[len(wanted) :] == [
        "pool_running",
        "pool_ready",
        "pool_needs_rows",
        "pool_inflight",
        "pool_fingerprint",
        "inflight",
    ]
