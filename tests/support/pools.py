"""Prebuild pools on a real database: a reconciler wired for tests, the operator actions beside it, and what
the database says the pool holds."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prebuildd.api.context import Services
from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.prebuilds.claim import WorkspaceCreator
from prebuildd.prebuilds.loop import Reconciler
from prebuildd.prebuilds.operations import PrebuildOperations
from prebuildd.runtime.config import ServerConfig
from prebuildd.store import channels
from prebuildd.store.listener import Listener
from prebuildd.workspaces.builder import WorkspaceBuilder
from tests.support.env import Env

# An echo template with one preset that keeps a pool of three prebuilds.
POOL = """
provisioner = "echo"
[[presets]]
name = "small"
[presets.prebuilds]
instances = 3
"""

# The same pool, whose builds fail at start (a config error): for the failure maths.
FAILING_BUILD = """
provisioner = "echo"
[echo]
start = { result = "failure", error = "terraform apply failed" }
[[presets]]
name = "small"
[presets.prebuilds]
instances = 4
"""


class ReconcilerUnderTest(Reconciler):
    """The reconciler, plus the Services that the same test's claims and operator actions use (test setup)."""

    services: Services

    async def _delete(self, workspace_id: UUID, reason: str) -> bool:
        return await self.executor.delete(workspace_id, reason)


def reconciler(
    env: Env, *, use_cycle_lock: bool = True, builder: WorkspaceBuilder | None = None, **config: object
) -> ReconcilerUnderTest:
    settings: dict[str, object] = {"postgres_url": env.db.url, "data_dir": env.tmp}
    settings.update(config)
    services = Services(
        config=ServerConfig(**settings),  # type: ignore[arg-type]
        clock=env.clock,
        db=env.db,
        listener=Listener(env.db, channels.ALL),
        queue=env.queue,
        builder=builder or env.builder,
    )
    rec = ReconcilerUnderTest.build(
        config=services.config,
        db=services.db,
        clock=services.clock,
        builder=services.builder,
        queue=services.queue,
        metrics=services.metrics,
        listener=services.listener,
        use_cycle_lock=use_cycle_lock,
    )
    assert isinstance(rec, ReconcilerUnderTest)
    rec.services = services
    services.kick_hooks.append(rec.kick)
    return rec


def operations(rec: ReconcilerUnderTest) -> PrebuildOperations:
    """The operator actions on the same database and clock as ``rec``, reading the same snapshot."""
    s = rec.services
    return PrebuildOperations(db=s.db, clock=s.clock, builder=s.builder, reader=rec.reader, kick=s.kick)


async def pool(env: Env, preset: str = "small") -> dict[str, int]:
    """Counts of the pool as the database sees it (latest build of each prebuild of the preset)."""
    rows = await env.one(
        """
        SELECT count(*) FILTER (WHERE transition = 'start' AND job_status = 'succeeded') AS running,
               count(*) FILTER (WHERE transition = 'start' AND job_status IN ('pending', 'running')) AS starting,
               count(*) FILTER (WHERE transition = 'delete' AND job_status IN ('pending', 'running')) AS deleting,
               count(*) AS total
        FROM workspace_latest_builds lb JOIN template_version_presets p ON p.id = lb.preset_id
        WHERE lb.owner_id = %s AND p.name = %s
        """,
        PREBUILDS_USER_ID,
        preset,
    )
    return {k: int(v) for k, v in rows.items()}


async def prebuild_ids(env: Env) -> list[UUID]:
    async with env.db.transaction() as conn:
        cur = await conn.execute(
            "SELECT workspace_id FROM workspace_latest_builds WHERE owner_id = %s AND transition = 'start' "
            "AND job_status = 'succeeded' ORDER BY workspace_created_at",
            (PREBUILDS_USER_ID,),
        )
        return [r["workspace_id"] for r in await cur.fetchall()]


async def converge(env: Env, rec: Reconciler, cycles: int = 5) -> None:
    for _ in range(cycles):
        await rec.run_cycle()
        await env.run_jobs()


def events_named(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


def creator(services: Services) -> WorkspaceCreator:
    """The claim service over the reconciler's parts (its database may be swapped by a test first)."""
    return services.workspace_creator()
