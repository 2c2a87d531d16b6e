"""The workspace builder on a real PostgreSQL: cold builds end to end, and every refusal with its status."""

from __future__ import annotations

import asyncio
import json

import pytest

from prebuildd.domain.errors import BuildError
from prebuildd.domain.jobs import BuildReason, Transition
from prebuildd.domain.manifest import ManifestError
from prebuildd.workspaces.builder import BuildRequest
from tests.support.env import Env
from tests.support.templates import EXEC_FILES, EXEC_MANIFEST


async def test_cold_build_end_to_end_with_exec(env: Env) -> None:
    pushed = await env.push("web", EXEC_MANIFEST, EXEC_FILES)
    import_job = await env.job(pushed.job_id)
    assert import_job["job_status"] == "succeeded", import_job["error"]

    created = await env.create(pushed.template_id, parameters={"repo": "https://example.com/app.git"})
    assert (await env.job(created.job_id))["job_status"] == "pending"
    assert await env.run_jobs() == 1
    job = await env.job(created.job_id)
    assert job["job_status"] == "succeeded", job["error"]
    build = await env.one("SELECT * FROM workspace_builds WHERE id = %s", created.build_id)
    assert build["parameters"] == {"repo": "https://example.com/app.git", "size": "small", "cpu": "2"}
    assert bytes(build["state"]).strip() == b"created-ws"
    data_dir = env.tmp / "work" / "data" / "workspaces" / str(created.workspace_id)
    assert build["outputs"] == {"path": str(data_dir)}
    assert (data_dir / "repo").read_text().strip() == "https://example.com/app.git"
    logs = await env.queue.logs(created.job_id)
    assert any("cloning https://example.com/app.git (small, 2 cpu)" in line.output for line in logs)

    deleted = await env.transition(created.workspace_id, Transition.DELETE)
    assert not deleted.orphan_deleted
    await env.run_jobs()
    assert (await env.job(deleted.job_id))["job_status"] == "succeeded"
    workspace = await env.one("SELECT * FROM workspaces WHERE id = %s", created.workspace_id)
    assert workspace["deleted"] and workspace["deleted_at"] == env.clock.now()
    assert not data_dir.exists()
    delete_logs = await env.queue.logs(deleted.job_id)
    assert any("deleting with state created-ws" in line.output for line in delete_logs)


async def test_a_failing_script_fails_the_job_with_its_output(env: Env) -> None:
    files = {
        **EXEC_FILES,
        "create.sh": "#!/bin/sh\necho 'resolving host'\necho 'fatal: repository not found' >&2\nexit 3\n",
    }
    pushed = await env.push("web", EXEC_MANIFEST, files)
    created = await env.create(pushed.template_id, parameters={"repo": "https://example.com/nope.git"})
    await env.run_jobs()
    job = await env.job(created.job_id)
    assert job["job_status"] == "failed"
    assert job["failure_class"] == "build"
    assert "exited with status 3" in job["error"]
    assert "fatal: repository not found" in job["error"]


async def test_missing_required_parameter_is_400_naming_it_and_changes_nothing(env: Env) -> None:
    pushed = await env.push("web", EXEC_MANIFEST, EXEC_FILES)
    before = (await env.count("workspaces"), await env.count("provisioner_jobs"))
    with pytest.raises(BuildError) as err:
        await env.create(pushed.template_id)
    assert err.value.status == 400 and not err.value.is_transient
    assert "`repo`" in err.value.message and "required" in err.value.message
    assert (await env.count("workspaces"), await env.count("provisioner_jobs")) == before


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"repo": "r", "colour": "red"}, "unknown parameter"),
        ({"repo": "r", "cpu": "lots"}, "expected a number"),
        ({"repo": "r", "size": "huge"}, "not one of"),
        ({"repo": "r", "cpu": 64}, "cpu"),
    ],
)
async def test_bad_parameters_are_400_and_change_nothing(
    env: Env, parameters: dict[str, object], expected: str
) -> None:
    pushed = await env.push("web", EXEC_MANIFEST, EXEC_FILES)
    before = (
        await env.count("workspaces"),
        await env.count("workspace_builds"),
        await env.count("provisioner_jobs"),
    )
    with pytest.raises(BuildError) as err:
        await env.create(pushed.template_id, parameters=parameters)
    assert err.value.status == 400
    assert expected in err.value.message
    after = (
        await env.count("workspaces"),
        await env.count("workspace_builds"),
        await env.count("provisioner_jobs"),
    )
    assert after == before


async def test_pending_import_is_406_and_failed_import_is_400(env: Env) -> None:
    pending = await env.push("web", EXEC_MANIFEST, EXEC_FILES, run_import=False)
    with pytest.raises(BuildError) as err:
        await env.create(pending.template_id, parameters={"repo": "r"})
    assert err.value.status == 406 and err.value.is_transient
    assert "importing" in err.value.message

    broken = {k: v for k, v in EXEC_FILES.items() if k != "create.sh"}
    failed = await env.push("broken", EXEC_MANIFEST, broken)
    job = await env.job(failed.job_id)
    assert job["job_status"] == "failed"
    assert "create.sh" in job["error"]
    with pytest.raises(BuildError) as err:
        await env.create(failed.template_id, parameters={"repo": "r"}, version_id=failed.version_id)
    assert err.value.status == 400 and "create.sh" in err.value.message


async def test_a_second_build_while_one_is_active_is_409(env: Env) -> None:
    pushed = await env.push("web", EXEC_MANIFEST, EXEC_FILES)
    created = await env.create(pushed.template_id, parameters={"repo": "r"})
    with pytest.raises(BuildError) as err:
        await env.transition(created.workspace_id, Transition.STOP)
    assert err.value.status == 409 and err.value.is_transient
    assert "active build" in err.value.message


async def test_concurrent_builds_of_one_workspace_only_one_wins(env: Env) -> None:
    pushed = await env.push("web", EXEC_MANIFEST, EXEC_FILES)
    created = await env.create(pushed.template_id, parameters={"repo": "r"})
    await env.run_jobs()

    async def stop() -> str:
        try:
            await env.transition(created.workspace_id, Transition.STOP)
            return "ok"
        except BuildError as exc:
            return str(exc.status)

    results = await asyncio.gather(*(stop() for _ in range(8)))
    assert sorted(results) == ["409"] * 7 + ["ok"]


async def test_immutable_parameter_cannot_change_after_the_first_build(env: Env) -> None:
    pushed = await env.push("web", EXEC_MANIFEST, EXEC_FILES)
    created = await env.create(pushed.template_id, parameters={"repo": "r", "cpu": 2})
    await env.run_jobs()
    await env.transition(created.workspace_id, Transition.STOP)
    await env.run_jobs()
    with pytest.raises(BuildError) as err:
        await env.transition(created.workspace_id, Transition.START, parameters={"cpu": 4})
    assert err.value.status == 400 and "immutable" in err.value.message
    restarted = await env.transition(created.workspace_id, Transition.START, parameters={"size": "large"})
    build = await env.one("SELECT * FROM workspace_builds WHERE id = %s", restarted.build_id)
    assert build["parameters"] == {"repo": "r", "size": "large", "cpu": "2"}
    assert build["build_number"] == 3


async def test_stop_and_delete_reuse_the_last_build_without_validation(env: Env) -> None:
    first = await env.push("web", EXEC_MANIFEST, EXEC_FILES)
    created = await env.create(first.template_id, parameters={"repo": "r"})
    await env.run_jobs()
    # A new active version adds a required parameter the workspace never had.
    second = await env.push(
        "web", EXEC_MANIFEST + '\n[[parameters]]\nname = "region"\nrequired = true\n', EXEC_FILES
    )
    assert second.version_id != first.version_id
    stopped = await env.transition(created.workspace_id, Transition.STOP)
    await env.run_jobs()
    deleted = await env.transition(created.workspace_id, Transition.DELETE)
    await env.run_jobs()
    for created_build in (stopped, deleted):
        build = await env.one("SELECT * FROM workspace_builds WHERE id = %s", created_build.build_id)
        assert build["template_version_id"] == first.version_id
        assert build["parameters"] == {"repo": "r", "size": "small", "cpu": "2"}
        assert bytes(build["state"]).strip() == b"created-ws"
        assert (await env.job(created_build.job_id))["job_status"] == "succeeded"


async def test_refused_creation_is_recorded_as_a_failed_build_and_orphan_deleted(env: Env) -> None:
    pushed = await env.push("web", EXEC_MANIFEST, EXEC_FILES)
    preset = await env.one("SELECT * FROM template_version_presets WHERE name = 'web'")
    req = BuildRequest(
        transition=Transition.START,
        initiator_id=env.owner_id,
        owner_id=env.owner_id,
        template_id=pushed.template_id,
        name="prebuild-x",
        parameters={"cpu": "lots"},
        preset_id=preset["id"],
        reason=BuildReason.PREBUILD,
    )
    async with env.db.transaction() as conn:
        with pytest.raises(BuildError) as err:
            await env.builder.build(conn, req)
    recorded = await env.builder.record_failed_build(env.db, req, err.value)
    job = await env.job(recorded.job_id)
    assert job["job_status"] == "failed" and job["failure_class"] == "config"
    assert "`cpu`" in job["error"] and job["started_at"] is None
    build = await env.one("SELECT * FROM workspace_builds WHERE id = %s", recorded.build_id)
    assert build["preset_id"] == preset["id"] and build["parameters"]["cpu"] == "lots"

    deleted = await env.transition(recorded.workspace_id, Transition.DELETE)
    assert deleted.orphan_deleted
    assert (await env.job(deleted.job_id))["job_status"] == "succeeded"
    assert (await env.one("SELECT deleted FROM workspaces WHERE id = %s", recorded.workspace_id))["deleted"]
    assert await env.run_jobs() == 0  # nothing for a daemon to do


async def test_broken_manifest_push_is_refused_and_stores_nothing(env: Env) -> None:
    with pytest.raises(ManifestError) as err:
        await env.push("web", 'provisioner = "exec"\n[exec]\ncreate = "c.sh"\nbogus = 1\n', {"c.sh": "true"})
    assert "bogus" in str(err.value) and "prebuildd.toml" in str(err.value)
    assert await env.count("templates") == 0
    assert await env.count("template_versions") == 0


async def test_preset_with_prebuilds_missing_a_required_parameter_imports_with_a_warning(env: Env) -> None:
    manifest = EXEC_MANIFEST + '\n[[presets]]\nname = "pool"\n[presets.prebuilds]\ninstances = 2\n'
    pushed = await env.push("web", manifest, EXEC_FILES)
    assert any("`repo`" in w and "pool" in w for w in pushed.warnings)
    version = await env.one("SELECT * FROM template_versions WHERE id = %s", pushed.version_id)
    assert (await env.job(pushed.job_id))["job_status"] == "succeeded"
    assert any("`repo`" in w for w in version["warnings"])
    preset = await env.one("SELECT * FROM template_version_presets WHERE name = 'pool'")
    assert preset["desired_instances"] == 2
    assert json.dumps(preset["parameters"]) == "{}"


async def test_preset_values_fill_parameters(env: Env) -> None:
    pushed = await env.push("web", EXEC_MANIFEST, EXEC_FILES)
    preset = await env.one("SELECT * FROM template_version_presets WHERE name = 'web'")
    created = await env.create(pushed.template_id, preset_id=preset["id"], parameters={"cpu": 4})
    build = await env.one("SELECT * FROM workspace_builds WHERE id = %s", created.build_id)
    assert build["parameters"] == {"repo": "https://example.com/web.git", "size": "large", "cpu": "4"}
    assert build["preset_id"] == preset["id"]


async def test_a_failed_build_keeps_the_state_it_left_for_the_delete(env: Env) -> None:
    files = {
        **EXEC_FILES,
        "create.sh": '#!/bin/sh\necho "half-made" > "$PREBUILDD_STATE_FILE"\necho "quota exceeded" >&2\nexit 1\n',
    }
    pushed = await env.push("web", EXEC_MANIFEST, files)
    created = await env.create(pushed.template_id, parameters={"repo": "r"})
    await env.run_jobs()
    assert (await env.job(created.job_id))["job_status"] == "failed"
    build = await env.one("SELECT * FROM workspace_builds WHERE id = %s", created.build_id)
    assert bytes(build["state"]).strip() == b"half-made"
    deleted = await env.transition(created.workspace_id, Transition.DELETE)
    assert not deleted.orphan_deleted  # the script ran: a real delete, with the state it left
    await env.run_jobs()
    logs = await env.queue.logs(deleted.job_id)
    assert any("deleting with state half-made" in line.output for line in logs)
