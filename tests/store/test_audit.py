"""The audit recorder on a real PostgreSQL: an entry commits or rolls back with its action, a refusal is written
on its own, reads filter and page, and the pruner deletes old entries in batches."""

from __future__ import annotations

from datetime import timedelta

import pytest

from prebuildd.domain.audit import outcome_of
from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.identity import audit, users
from prebuildd.identity.audit import AuditContext, AuditFilter, AuditPruner, Target
from tests.support.env import Env


async def _context(env: Env, username: str = "admin") -> AuditContext:
    user = await users.user_named(env.db, env.org_id, username)
    return AuditContext.of_user(env.clock, user, request_id="req-1", source_ip="10.0.0.7")


async def test_a_successful_action_commits_its_entry_and_a_failed_one_rolls_it_back(env: Env) -> None:
    ctx = await _context(env)
    owner = await users.user_named(env.db, env.org_id, "admin")
    await users.update_user(
        env.db, env.clock, owner, "alice", role="template-admin", suspended=None, audit=ctx
    )
    [entry] = await audit.entries(env.db, AuditFilter(action="user.role"))
    assert (entry.actor_name, entry.actor_id, entry.outcome) == ("admin", ctx.actor_id, "ok")
    assert (entry.object_type, entry.object_name, entry.object_id) == ("user", "alice", str(env.member_id))
    assert entry.detail == {"from": "member", "to": "template-admin"}
    assert (entry.request_id, entry.source_ip, entry.at) == ("req-1", "10.0.0.7", env.clock.now())

    # The last owner cannot be demoted: the change and its entry roll back together.
    with pytest.raises(PrebuilddError) as refused:
        await users.update_user(env.db, env.clock, owner, "admin", role="member", suspended=None, audit=ctx)
    assert refused.value.code is ErrorCode.CONFLICT
    assert [e.object_name for e in await audit.entries(env.db, AuditFilter(action="user.role"))] == ["alice"]

    # Any error inside the action's transaction takes the entry with it.
    with pytest.raises(RuntimeError):
        async with env.db.transaction() as conn:
            await audit.record(conn, ctx, "template.delete", Target("template", "ghost"))
            raise RuntimeError("the action failed after recording")
    assert await audit.entries(env.db, AuditFilter(action="template.delete")) == []


async def test_a_refusal_is_recorded_on_its_own_with_its_outcome_and_the_object_it_named(env: Env) -> None:
    ctx = await _context(env, "alice")
    ctx.about("template", "app", organization_id=env.org_id)
    cases = [
        (ErrorCode.FORBIDDEN, "denied"),
        (ErrorCode.INVALID_PARAMETER, "invalid"),
        (ErrorCode.NOT_FOUND, "invalid"),
        (ErrorCode.CONFLICT, "conflict"),
        (ErrorCode.IMPORT_PENDING, "conflict"),
        (ErrorCode.DATABASE_UNAVAILABLE, "error"),
        (ErrorCode.INTERNAL, "error"),
    ]
    for code, outcome in cases:
        assert outcome_of(code) == outcome
        await audit.record_refusal(env.db, ctx, "template.push", PrebuilddError(code, f"refused: {code}"))
    found = await audit.entries(env.db, AuditFilter(actor="ALICE"))
    assert [(e.error_code, e.outcome) for e in reversed(found)] == [(c.value, o) for c, o in cases]
    assert {(e.object_type, e.object_name, e.organization_id) for e in found} == {
        ("template", "app", env.org_id)
    }
    assert found[0].error_message == "refused: internal"


async def test_reads_filter_by_actor_action_since_object_outcome_and_organization_and_page(env: Env) -> None:
    admin, alice = await _context(env), await _context(env, "alice")
    async with env.db.transaction() as conn:
        for n in range(5):
            await audit.record(
                conn, admin, "template.push", type="template", name=f"t{n}", organization_id=env.org_id
            )
            env.clock.advance(60)
        await audit.record(conn, alice, "token.create", type="token", name="laptop")
        await audit.record(conn, admin, "prebuilds.pause", Target("site"))
    await audit.record_refusal(env.db, alice, "user.create", PrebuilddError(ErrorCode.FORBIDDEN, "no"))

    def names(found: list[audit.AuditEntry]) -> list[str]:
        return [e.action if not e.object_name else e.object_name for e in found]

    assert names(await audit.entries(env.db, AuditFilter(actor="alice"))) == ["user.create", "laptop"]
    assert names(await audit.entries(env.db, AuditFilter(actor=str(alice.actor_id)))) == [
        "user.create",
        "laptop",
    ]
    assert len(await audit.entries(env.db, AuditFilter(action="template."))) == 5
    assert len(await audit.entries(env.db, AuditFilter(action="template.*"))) == 5
    assert await audit.entries(env.db, AuditFilter(action="template")) == []  # exact names only, or a prefix
    since = env.clock.now() - timedelta(seconds=150)  # t3 was pushed 120 s ago, t2 180 s ago
    assert names(await audit.entries(env.db, AuditFilter(action="template.push", since=since))) == [
        "t4",
        "t3",
    ]
    assert names(await audit.entries(env.db, AuditFilter(object="t2"))) == ["t2"]
    assert names(await audit.entries(env.db, AuditFilter(outcome="denied"))) == ["user.create"]
    assert len(await audit.entries(env.db, AuditFilter(organization_ids=[env.org_id]))) == 5

    pages: list[list[str]] = []
    cursor = None
    while True:
        page = await audit.entries(env.db, AuditFilter(action="template."), before=cursor, limit=2)
        if not page:
            break
        pages.append(names(page))
        cursor = page[-1].id
    assert pages == [["t4", "t3"], ["t2", "t1"], ["t0"]]


async def test_the_pruner_deletes_entries_older_than_the_retention_in_batches(env: Env) -> None:
    ctx = await _context(env)
    async with env.db.transaction() as conn:
        for n in range(7):
            await audit.record(conn, ctx, "token.create", type="token", name=f"old{n}")
    env.clock.advance(days=10)
    async with env.db.transaction() as conn:
        await audit.record(conn, ctx, "token.create", type="token", name="new")
    env.clock.advance(days=1)

    pruner = AuditPruner(env.db, env.clock, timedelta(days=5), batch=3)
    assert pruner.interval == 3600.0
    assert await pruner.prune_once() == 7  # three batches: 3 + 3 + 1
    assert [e.object_name for e in await audit.entries(env.db, AuditFilter())] == ["new"]
    assert await pruner.prune_once() == 0
    env.clock.advance(days=5)
    assert await pruner.prune_once() == 1
