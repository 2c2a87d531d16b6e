"""Failure handling on a real PostgreSQL with the fake clock (SPEC §6, §11 items 1–3)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from structlog.testing import capture_logs

from prebuildd.domain.errors import BuildError, ErrorCode
from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.store.db import Conn
from prebuildd.workspaces.builder import BuildCreated, BuildRequest, WorkspaceBuilder
from tests.support.env import Env
from tests.support.pools import FAILING_BUILD, POOL, events_named, operations, pool, reconciler

INTERVAL = 60.0


class FlakyBuilder(WorkspaceBuilder):
    """The real builder, made to refuse prebuild creations with a transient error while ``failing`` is set."""

    failing = False

    async def build(self, conn: Conn, req: BuildRequest) -> BuildCreated:
        if self.failing and req.workspace_id is None:
            raise BuildError(ErrorCode.DATABASE_UNAVAILABLE, "provisioner capacity exhausted")
        return await super().build(conn, req)


def flaky(env: Env, **config: Any) -> tuple[Any, FlakyBuilder]:
    builder = FlakyBuilder(env.clock)
    rec = reconciler(env, backoff_interval=INTERVAL, builder=builder, **config)
    return rec, builder


async def tracker(env: Env) -> dict[str, Any] | None:
    async with env.db.transaction() as conn:
        cur = await conn.execute("SELECT * FROM preset_failure_trackers")
        return await cur.fetchone()


async def attempts(env: Env, rec: Any) -> int:
    """Run a cycle; how many creations it attempted (made or refused)."""
    before = await tracker(env)
    result = await rec.run_cycle()
    after = await tracker(env)
    refused = int(
        bool(after and (not before or after["consecutive_failures"] != before["consecutive_failures"]))
    )
    return int(result.created) + refused


async def test_transient_backoff_is_linear_persisted_and_shared(env: Env) -> None:
    await env.push("t", POOL)
    rec, builder = flaky(env)
    builder.failing = True
    with capture_logs() as logs:
        assert await attempts(env, rec) == 1  # one failure recorded, the other two creates not tried
    [failed] = events_named(logs, "prebuild.create_failed")
    assert failed["log_level"] == "warning" and failed["transient"] is True
    assert failed["error"] == "provisioner capacity exhausted" and failed["preset_id"]
    row = await tracker(env)
    assert (
        row is not None
        and row["consecutive_failures"] == 1
        and row["last_error"] == "provisioner capacity exhausted"
    )
    for n in (1, 2, 3):
        # Backing off for n intervals after n consecutive failures, whoever looks:
        env.clock.advance(INTERVAL * n - 1)
        # A new process (a restart) or another replica sees the same record:
        restarted = reconciler(env, backoff_interval=INTERVAL, builder=builder)
        assert await attempts(env, restarted) == 0
        plan = restarted.last_result.plans[0]
        assert plan.blocked is not None and plan.blocked.startswith("backing off")
        env.clock.advance(2)
        assert await attempts(env, rec) == 1
        row = await tracker(env)
        assert row is not None and row["consecutive_failures"] == n + 1
    # A success clears the record; the next failure backs off 1x again.
    env.clock.advance(INTERVAL * 4 + 1)
    builder.failing = False
    result = await rec.run_cycle()
    assert result.created == 3 and await tracker(env) is None
    await env.run_jobs()
    async with env.db.transaction() as conn:
        await conn.execute(
            "UPDATE workspaces SET owner_id = %s, name = 'claimed' WHERE id = "
            "(SELECT id FROM workspaces WHERE owner_id = %s LIMIT 1)",
            (env.member_id, PREBUILDS_USER_ID),
        )
    builder.failing = True
    assert await attempts(env, rec) == 1
    env.clock.advance(INTERVAL - 1)
    assert await attempts(env, rec) == 0
    env.clock.advance(2)
    assert await attempts(env, rec) == 1


async def test_transient_backoff_is_capped_by_max_backoff(env: Env) -> None:
    await env.push("t", POOL)
    rec, builder = flaky(env, max_backoff=150.0)
    builder.failing = True
    for _ in range(5):
        await rec.run_cycle()
        env.clock.advance(151)
    row = await tracker(env)
    assert row is not None and row["consecutive_failures"] == 5  # never waited more than 150 s


CONFIG_ERROR = """
provisioner = "echo"
[[parameters]]
name = "repo"
required = true
[[presets]]
name = "broken"
[presets.prebuilds]
instances = 3
"""


async def test_config_error_records_failed_builds_and_hard_limits_after_three(env: Env) -> None:
    pushed = await env.push("t", CONFIG_ERROR)
    assert any("`repo`" in w for w in pushed.warnings)
    rec = reconciler(env, backoff_interval=INTERVAL)
    first = await rec.run_cycle()
    assert first is not None and first.created == 0 and len(first.failures) == 1
    job = await env.one(
        "SELECT j.* FROM provisioner_jobs j JOIN workspace_builds b ON b.job_id = j.id "
        "JOIN workspaces w ON w.id = b.workspace_id WHERE w.owner_id = %s",
        PREBUILDS_USER_ID,
    )
    assert job["job_status"] == "failed" and job["failure_class"] == "config"
    assert "`repo`" in job["error"] and "required" in job["error"]
    # Backoff from the database evidence: 1 interval after the first failure, 2 after the second.
    env.clock.advance(INTERVAL - 1)
    assert (await rec.run_cycle()).failures == []  # type: ignore[union-attr]
    env.clock.advance(2)
    assert len((await rec.run_cycle()).failures) == 1  # type: ignore[union-attr]
    env.clock.advance(2 * INTERVAL + 1)
    assert len((await rec.run_cycle()).failures) == 1  # type: ignore[union-attr]
    # The next snapshot sees three failed creations: the preset is hard-limited and says why.
    with capture_logs() as logs:
        limited = await rec.run_cycle()
    [changed] = events_named(logs, "prebuild.status_changed")
    assert changed["log_level"] == "warning"
    assert changed["status"] == "hard_limited" and changed["preset"] == "t/broken"
    assert "`repo`" in changed["error"]
    assert limited is not None and limited.failures == [] and limited.created == 0
    preset = await env.one("SELECT * FROM template_version_presets WHERE name = 'broken'")
    assert preset["prebuild_status"] == "hard_limited" and preset["prebuild_status_reason"] == "config"
    assert "`repo`" in preset["prebuild_last_error"]
    # No further creates, however long we wait; the three failed records stay as evidence.
    for _ in range(3):
        env.clock.advance(hours=2)
        result = await rec.run_cycle()
        assert result is not None and result.failures == [] and result.created == 0
        assert result.plans[0].blocked is not None and result.plans[0].blocked.startswith("hard-limited")
    failed = await env.one(
        "SELECT count(*) AS n FROM workspace_latest_builds WHERE owner_id = %s AND job_status = 'failed'",
        PREBUILDS_USER_ID,
    )
    assert failed["n"] == 3
    hard_limited_events = await env.one(
        "SELECT count(*) AS n FROM events WHERE kind = 'prebuild.hard_limited'"
    )
    assert hard_limited_events["n"] == 1


async def _fail_n_builds(env: Env, n: int, *, hard_limit: int) -> Any:
    await env.push("t", FAILING_BUILD.replace("instances = 4", f"instances = {n}"))
    rec = reconciler(env, backoff_interval=INTERVAL, failure_hard_limit=hard_limit)
    result = await rec.run_cycle()
    assert result is not None and result.created == n
    await env.run_jobs()
    return await rec.run_cycle()


async def test_hard_limit_counts_build_failures(env: Env) -> None:
    result = await _fail_n_builds(env, 3, hard_limit=3)
    preset = await env.one("SELECT * FROM template_version_presets WHERE name = 'small'")
    assert preset["prebuild_status"] == "hard_limited" and preset["prebuild_status_reason"] == "build"
    assert preset["prebuild_last_error"] == "terraform apply failed"
    assert result.plans[0].blocked.startswith("hard-limited")


async def test_two_failures_do_not_hard_limit_at_three(env: Env) -> None:
    await _fail_n_builds(env, 2, hard_limit=3)
    preset = await env.one("SELECT * FROM template_version_presets WHERE name = 'small'")
    assert preset["prebuild_status"] == "healthy"


async def test_one_failure_does_not_hard_limit_at_two(env: Env) -> None:
    await _fail_n_builds(env, 1, hard_limit=2)
    preset = await env.one("SELECT * FROM template_version_presets WHERE name = 'small'")
    assert preset["prebuild_status"] == "healthy"


async def test_a_limit_of_two_catches_three_failures(env: Env) -> None:
    await _fail_n_builds(env, 3, hard_limit=2)
    preset = await env.one("SELECT * FROM template_version_presets WHERE name = 'small'")
    assert preset["prebuild_status"] == "hard_limited"


async def test_a_failure_completing_long_after_its_build_was_created_still_backs_off(env: Env) -> None:
    await env.push("t", FAILING_BUILD.replace("instances = 4", "instances = 1"))
    rec = reconciler(env, backoff_interval=INTERVAL)
    assert (await rec.run_cycle()).created == 1  # type: ignore[union-attr]
    env.clock.advance(minutes=5)  # the build runs for five minutes, then fails
    await env.run_jobs()
    env.clock.advance(30)
    result = await rec.run_cycle()
    assert result is not None and result.created == 0
    assert result.plans[0].blocked is not None and result.plans[0].blocked.startswith("backing off")
    env.clock.advance(31)
    assert (await rec.run_cycle()).created == 1  # type: ignore[union-attr]


async def test_retry_lets_a_hard_limited_preset_create_again(env: Env) -> None:
    await _fail_n_builds(env, 3, hard_limit=3)
    rec = reconciler(env, backoff_interval=INTERVAL)
    await operations(rec).retry(env.org_id, "t", "small")
    preset = await env.one("SELECT * FROM template_version_presets WHERE name = 'small'")
    assert preset["prebuild_status"] == "healthy" and preset["failures_reset_at"] == env.clock.now()
    env.clock.advance(1)
    result = await rec.run_cycle()
    assert result is not None and result.created == 3
    evidence = await env.one(
        "SELECT count(*) AS n FROM workspace_latest_builds WHERE owner_id = %s AND job_status = 'failed'",
        PREBUILDS_USER_ID,
    )
    assert evidence["n"] == 3  # the failed prebuilds stay until cleaned up


async def test_cleanup_lists_then_deletes_failed_prebuilds(env: Env) -> None:
    await _fail_n_builds(env, 3, hard_limit=3)
    rec = reconciler(env, backoff_interval=INTERVAL)
    listed, errors = await operations(rec).cleanup(env.org_id, "t", None, dry_run=True)
    assert len(listed) == 3 and errors == []
    assert (await pool(env))["total"] == 3
    removed, errors = await operations(rec).cleanup(env.org_id, "t", None, dry_run=False)
    assert len(removed) == 3 and errors == []
    await env.run_jobs()
    assert (await pool(env))["total"] == 0
    preset = await env.one("SELECT * FROM template_version_presets WHERE name = 'small'")
    assert preset["failures_reset_at"] is not None


async def test_infrastructure_failures_never_hard_limit(env: Env) -> None:
    await env.push("t", POOL)
    rec = reconciler(env, backoff_interval=INTERVAL)
    for _ in range(4):
        await rec.run_cycle()
        async with env.db.transaction() as conn:  # every running create is lost with its daemon
            await conn.execute(
                "UPDATE provisioner_jobs SET started_at = %s, worker_id = 'gone', updated_at = %s "
                "WHERE job_status = 'pending' AND type = 'workspace_build'",
                (env.clock.now(), env.clock.now()),
            )
        env.clock.advance(minutes=10)
        assert await env.queue.fail_stale(timedelta(minutes=5))
        env.clock.advance(hours=1)
    preset = await env.one("SELECT * FROM template_version_presets WHERE name = 'small'")
    assert preset["prebuild_status"] == "healthy"
    result = await rec.run_cycle()
    assert result is not None and result.created == 3


async def test_slow_start_after_a_failure_doubles_creates_per_cycle(env: Env) -> None:
    manifest = FAILING_BUILD.replace("instances = 4", "instances = 10")
    await env.push("t", manifest)
    rec = reconciler(env, backoff_interval=1.0, failure_hard_limit=0)
    async with env.db.transaction() as conn:  # one prebuild, then make its build fail
        await conn.execute("UPDATE template_version_presets SET desired_instances = 1")
    assert (await rec.run_cycle()).created == 1  # type: ignore[union-attr]
    await env.run_jobs()
    async with env.db.transaction() as conn:
        await conn.execute("UPDATE template_version_presets SET desired_instances = 10")
    made = []
    for _ in range(4):
        env.clock.advance(INTERVAL * 20)  # past any backoff
        result = await rec.run_cycle()
        assert result is not None
        made.append(result.created)
    assert made == [
        1,
        2,
        4,
        3,
    ]  # 1 + 2 + 4 in flight, then the 3 the pool of 10 still lacks (failed ones take no slot)


async def test_a_claimed_success_still_breaks_a_run_of_failures(env: Env) -> None:
    """Three creations fail, a fourth succeeds and is claimed: the last three creations of the pool are not all
    failures, so the preset must not be hard-limited (the claimed prebuild left the pool, not the history)."""
    manifest = FAILING_BUILD.replace("instances = 4", "instances = 1")
    await env.push("t", manifest)
    rec = reconciler(env, backoff_interval=1.0, failure_hard_limit=3)
    for _ in range(2):  # two failures
        await rec.run_cycle()
        await env.run_jobs()
        env.clock.advance(INTERVAL * 10)
    # The template is fixed in place for the test: the next creation succeeds.
    async with env.db.transaction() as conn:
        await conn.execute("UPDATE template_versions SET manifest = replace(manifest, 'failure', 'success')")
    await rec.run_cycle()
    await env.run_jobs()
    succeeded = await env.one(
        "SELECT workspace_id FROM workspace_latest_builds WHERE owner_id = %s AND job_status = 'succeeded'",
        PREBUILDS_USER_ID,
    )
    async with env.db.transaction() as conn:  # the success is claimed
        await conn.execute(
            "UPDATE workspaces SET owner_id = %s, name = 'mine', pool_preset_id = NULL WHERE id = %s",
            (env.member_id, succeeded["workspace_id"]),
        )
        await conn.execute("UPDATE template_versions SET manifest = replace(manifest, 'success', 'failure')")
    env.clock.advance(INTERVAL * 10)
    await rec.run_cycle()  # one more failure: failures, failures, success, failure
    await env.run_jobs()
    env.clock.advance(INTERVAL * 10)
    result = await rec.run_cycle()
    assert result is not None
    preset = await env.one("SELECT * FROM template_version_presets WHERE name = 'small'")
    assert preset["prebuild_status"] == "healthy", result.plans[0]
    assert not (result.plans[0].blocked or "").startswith("hard-limited")
