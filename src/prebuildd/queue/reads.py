"""Jobs as operators see them: newest first, each pending one with the reason it waits when no daemon can run it.

A job no daemon can take is not a failure (SPEC §4): it waits, visibly. What daemons can take is, for now, what
the embedded daemons advertise (``provisioner.registry.offered_capabilities``); the reason itself is the pure
``domain.jobs.waiting_reason``.
"""

from __future__ import annotations

from uuid import UUID

from prebuildd.domain.jobs import Capabilities, waiting_reason
from prebuildd.store.db import Database, Row, fetch_all


async def list_jobs(
    db: Database, offered: Capabilities, *, organization_id: UUID, status: str | None, limit: int
) -> list[tuple[Row, str | None]]:
    """The newest ``limit`` jobs (of one status when given), each with its waiting reason."""
    async with db.transaction() as conn:
        rows = await fetch_all(
            conn, "api.jobs", {"organization_id": organization_id, "status": status, "limit": limit}
        )
    return [(row, waiting_reason(row, offered)) for row in rows]
