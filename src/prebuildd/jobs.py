"""Jobs as operators see them: newest first, each pending one with the reason it waits when no daemon can run it.

A job no daemon can take is not a failure (SPEC §4): it waits, visibly. What daemons can take is, for now, what
the embedded daemons advertise; ``offered_capabilities`` is the one place that knows, so daemons that connect
from elsewhere can be added to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from uuid import UUID

from prebuildd.config import ServerConfig
from prebuildd.provisioner.registry import available_provisioners
from prebuildd.store.db import Database, Row, fetch_all


@dataclass(frozen=True)
class Capabilities:
    """What the known daemons can run: provisioner kinds, and the tags they offer."""

    kinds: frozenset[str]
    tags: Mapping[str, str]


def offered_capabilities(config: ServerConfig) -> Capabilities:
    """The kinds and tags of the embedded daemons (none when the server runs no embedded daemon)."""
    if config.provisioner_daemons <= 0:
        return Capabilities(frozenset(), {})
    return Capabilities(frozenset(available_provisioners()), dict(config.provisioner_tags))


def waiting_reason(job: Row, offered: Capabilities) -> str | None:
    """Why the pending ``job`` cannot be taken by any known daemon, or None when one can take it."""
    if job["job_status"] != "pending":
        return None
    if job["provisioner"] not in offered.kinds:
        return f"no provisioner for kind {job['provisioner']}"
    missing = {k: v for k, v in dict(job["tags"] or {}).items() if offered.tags.get(k) != v}
    if missing:
        tags = ", ".join(f"{k}={v}" for k, v in sorted(missing.items()))
        return f"no provisioner offering tags {tags}"
    return None


async def list_jobs(
    db: Database, config: ServerConfig, *, organization_id: UUID, status: str | None, limit: int
) -> list[tuple[Row, str | None]]:
    """The newest ``limit`` jobs (of one status when given), each with its waiting reason."""
    async with db.transaction() as conn:
        rows = await fetch_all(
            conn, "api.jobs", {"organization_id": organization_id, "status": status, "limit": limit}
        )
    offered = offered_capabilities(config)
    return [(row, waiting_reason(row, offered)) for row in rows]
