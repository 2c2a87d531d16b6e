"""The dashboard's Workspaces, Queue, Templates and Audit readers against the real database: each one shows a
caller what the API would (own workspaces or everyone's, the queue for template admins, import errors for
template admins, the audit log for owners), never another organization's, and never a prebuildd secret."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest

from prebuildd.api.context import Services
from prebuildd.dashboard.views import audit as audit_view
from prebuildd.dashboard.views import queue as queue_view
from prebuildd.dashboard.views import templates as templates_view
from prebuildd.dashboard.views import workspaces as workspaces_view
from prebuildd.dashboard.views.redact import MASK, mask_secrets
from prebuildd.domain.errors import ErrorCode, PrebuilddError
from prebuildd.domain.secrets import AGENT_TOKEN_PREFIX, TOKEN_PREFIX, new_secret
from prebuildd.identity import users
from prebuildd.identity.audit import AuditContext, record
from prebuildd.identity.users import User
from prebuildd.runtime.config import ServerConfig
from prebuildd.store import channels
from prebuildd.store import identity as identity_store
from prebuildd.store.listener import Listener
from tests.support.dashboard import FAILING_IMPORT, WARNING
from tests.support.env import Env

SECRET = new_secret(AGENT_TOKEN_PREFIX)

LOGGING = f"""
provisioner = "echo"
[echo.start]
logs = ["cloning", "connecting with {SECRET}", "ready"]
"""


def services(env: Env, **config: object) -> Services:
    settings: dict[str, object] = {"postgres_url": env.db.url, "data_dir": env.tmp}
    settings.update(config)
    return Services(
        config=ServerConfig(**settings),  # type: ignore[arg-type]
        clock=env.clock,
        db=env.db,
        listener=Listener(env.db, channels.ALL),
        queue=env.queue,
        builder=env.builder,
    )


async def user(env: Env, name: str, role: str = "member") -> User:
    return await users.create_user(env.db, env.clock, username=name, role=role)


async def other_organization_owner(env: Env) -> User:
    async with env.db.transaction() as conn:
        other = await identity_store.insert_organization(
            conn, id=uuid4(), name="other", display_name="", is_default=False, now=env.clock.now()
        )
    return await users.create_user(env.db, env.clock, username="olga", role="owner", organization_id=other.id)


def test_mask_secrets_hides_every_kind_of_prebuildd_secret_and_nothing_else() -> None:
    token = new_secret(TOKEN_PREFIX)
    text = f"token={token} agent {SECRET}; pbt_short and plain words"
    assert mask_secrets(text) == f"token={MASK} agent {MASK}; pbt_short and plain words"


# -- workspaces ------------------------------------------------------------------------------------------------


async def test_members_see_their_own_workspaces_and_template_admins_everyones(env: Env) -> None:
    svc = services(env)
    pushed = await env.push("t", LOGGING)
    alice = await user(env, "alice2")
    bob = await user(env, "bob")
    admin = await user(env, "tess", "template-admin")
    mine = await env.create(pushed.template_id, "mine", owner_id=alice.id)
    await env.create(pushed.template_id, "theirs", owner_id=bob.id)

    seen = await workspaces_view.workspaces_view(svc, alice)
    assert not seen.everyone
    assert [w.name for w in seen.workspaces] == ["mine"]
    everyone = await workspaces_view.workspaces_view(svc, admin)
    assert everyone.everyone and {w.name for w in everyone.workspaces} == {"mine", "theirs"}
    assert (await workspaces_view.workspaces_view(svc, await other_organization_owner(env))).workspaces == []

    theirs = next(w for w in everyone.workspaces if w.name == "theirs")
    with pytest.raises(PrebuilddError) as hidden:
        await workspaces_view.workspace_detail(svc, alice, theirs.id)
    assert hidden.value.code is ErrorCode.NOT_FOUND
    detail = await workspaces_view.workspace_detail(svc, alice, mine.workspace_id)
    assert [b.id for b in detail.builds] == [mine.build_id]
    assert theirs.latest_build is not None
    with pytest.raises(PrebuilddError) as log_hidden:
        await workspaces_view.build_log(svc, alice, theirs.latest_build.id)
    assert log_hidden.value.code is ErrorCode.NOT_FOUND


async def test_a_build_log_reads_on_from_its_cursor_and_ends_when_the_build_has_finished(env: Env) -> None:
    svc = services(env)
    pushed = await env.push("t", LOGGING)
    alice = await user(env, "alice2")
    created = await env.create(pushed.template_id, "ws", owner_id=alice.id)

    before = await workspaces_view.build_log(svc, alice, created.build_id)
    assert before.lines == [] and before.active and before.after == 0

    await env.run_jobs()
    chunk = await workspaces_view.build_log(svc, alice, created.build_id, after=before.after)
    outputs = [line.output for line in chunk.lines]
    assert "cloning" in outputs and "ready" in outputs
    assert f"connecting with {MASK}" in outputs
    assert all(SECRET not in line.output for line in chunk.lines)
    assert not chunk.active and chunk.build.status == "succeeded"
    assert chunk.after == chunk.lines[-1].id

    again = await workspaces_view.build_log(svc, alice, created.build_id, after=chunk.after)
    assert again.lines == [] and again.after == chunk.after and not again.active


# -- queue -----------------------------------------------------------------------------------------------------


async def test_the_queue_shows_why_a_job_waits_and_how_long_the_oldest_has(env: Env) -> None:
    # A server without embedded daemons: no daemon it knows of takes echo jobs.
    svc = services(env, provisioner_daemons=0)
    pushed = await env.push("t", 'provisioner = "echo"\n')
    admin = await user(env, "tess", "template-admin")
    first = await env.create(pushed.template_id, "first")
    env.clock.advance(90)
    second = await env.create(pushed.template_id, "second")
    env.clock.advance(30)

    view = await queue_view.queue_view(svc, admin)
    assert [q.job.id for q in view.pending] == [first.job_id, second.job_id]  # oldest first
    assert view.pending_total == 2 and view.running_total == 0 and not view.truncated
    assert {q.waiting_reason for q in view.pending} == {"no provisioner for kind echo"}
    assert view.stuck == 2
    assert view.oldest_pending_seconds == pytest.approx(120)
    assert view.daemons.embedded_configured == 0 and view.daemons.kinds == []

    with pytest.raises(PrebuilddError) as refused:
        await queue_view.queue_view(svc, await user(env, "bob"))
    assert refused.value.code is ErrorCode.FORBIDDEN
    other = await queue_view.queue_view(svc, await other_organization_owner(env))
    assert other.pending == [] and other.pending_total == 0 and other.oldest_pending_seconds is None


async def test_the_queue_lists_running_jobs_with_their_worker_and_counts_past_the_listed_ones(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = services(env)
    pushed = await env.push("t", 'provisioner = "echo"\n')
    admin = await user(env, "tess", "owner")
    created = [await env.create(pushed.template_id, f"ws{i}") for i in range(3)]
    taken = await env.queue.acquire("daemon-a", ["echo"], {})
    assert taken is not None and taken.id == created[0].job_id
    env.clock.advance(timedelta(minutes=5).total_seconds())
    monkeypatch.setattr(queue_view, "LISTED", 1)

    view = await queue_view.queue_view(svc, admin)
    assert [q.job.id for q in view.running] == [created[0].job_id]
    assert view.running[0].age_seconds == pytest.approx(300)
    assert view.daemons.busy_workers == ["daemon-a"]
    assert "echo" in view.daemons.kinds
    assert all(q.waiting_reason is None for q in view.pending)
    # One of two pending jobs is listed; the count and the oldest age still cover both.
    assert len(view.pending) == 1 and view.pending_total == 2 and view.truncated
    assert view.oldest_pending_seconds == pytest.approx(300)


# -- templates -------------------------------------------------------------------------------------------------


async def test_members_see_that_an_import_failed_and_template_admins_see_why_and_its_log(env: Env) -> None:
    svc = services(env)
    failed = await env.push("broken", FAILING_IMPORT)
    await env.push("warned", WARNING)
    member = await user(env, "bob")
    admin = await user(env, "tess", "template-admin")

    def versions(view: templates_view.TemplatesView, name: str) -> list[templates_view.VersionRow]:
        return next(row.versions for row in view.rows if row.template.name == name)

    as_member = await templates_view.templates_view(svc, member)
    assert not as_member.sees_outputs
    assert versions(as_member, "broken")[0].import_error == templates_view.HIDDEN_ERROR
    as_admin = await templates_view.templates_view(svc, admin)
    assert as_admin.sees_outputs
    broken = versions(as_admin, "broken")[0]
    assert broken.version.import_status == "failed" and broken.import_error is not None
    assert "exit 3" in broken.import_error
    warned = versions(as_admin, "warned")[0]
    assert warned.import_error is None and any("repo" in w for w in warned.warnings)
    assert versions(as_member, "warned")[0].warnings == warned.warnings

    log = await templates_view.import_log(svc, admin, "broken", failed.version_name)
    assert [line.output for line in log.lines][:2] == ["checking the manifest", "exit 3"]
    assert not log.active
    with pytest.raises(PrebuilddError) as refused:
        await templates_view.import_log(svc, member, "broken", failed.version_name)
    assert refused.value.code is ErrorCode.FORBIDDEN
    with pytest.raises(PrebuilddError) as hidden:
        await templates_view.import_log(
            svc, await other_organization_owner(env), "broken", failed.version_name
        )
    assert hidden.value.code is ErrorCode.NOT_FOUND


# -- audit -----------------------------------------------------------------------------------------------------


async def _entries(env: Env, actor: User, actions: list[str], organization_id: object) -> None:
    context = AuditContext(env.clock, actor.id, actor.username)
    async with env.db.transaction() as conn:
        for action in actions:
            env.clock.advance(1)
            await record(conn, context, action, type="template", name="t", organization_id=organization_id)


async def test_the_audit_log_is_for_owners_scoped_to_their_organization_and_paged(env: Env) -> None:
    svc = services(env)
    owner = await user(env, "oscar", "owner")
    site = await users.create_user(env.db, env.clock, username="root2", role="owner", site_owner=True)
    olga = await other_organization_owner(env)
    await _entries(env, owner, [f"template.push{i}" for i in range(5)], owner.organization_id)
    await _entries(env, olga, ["template.delete"], olga.organization_id)

    for refused in (await user(env, "bob"), await user(env, "tess", "template-admin")):
        with pytest.raises(PrebuilddError) as error:
            await audit_view.audit_view(svc, refused)
        assert error.value.code is ErrorCode.FORBIDDEN
        assert not audit_view.may_read_audit(refused)

    first = await audit_view.audit_view(svc, owner, limit=2)
    assert [e.action for e in first.entries] == ["template.push4", "template.push3"]
    assert first.next_cursor is not None and not first.site_wide
    rest = await audit_view.audit_view(svc, owner, before=first.next_cursor, limit=10)
    assert [e.action for e in rest.entries] == ["template.push2", "template.push1", "template.push0"]
    assert rest.next_cursor is None

    assert [e.action for e in (await audit_view.audit_view(svc, olga)).entries] == ["template.delete"]
    everything = await audit_view.audit_view(svc, site)
    assert everything.site_wide and {"template.delete", "template.push0"} <= {
        e.action for e in everything.entries
    }

    query = audit_view.AuditQuery.of(actor=" oscar ", action="template.", outcome="", object=None)
    assert query == audit_view.AuditQuery(actor="oscar", action="template.")
    assert len((await audit_view.audit_view(svc, site, query)).entries) == 5
    with pytest.raises(PrebuilddError) as invalid:
        await audit_view.audit_view(svc, owner, audit_view.AuditQuery(outcome="maybe"))
    assert invalid.value.code is ErrorCode.INVALID_REQUEST
