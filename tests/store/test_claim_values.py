"""Values given at claim time, on exec templates with real scripts: mutable ones reach the claim step (or the
start script when the template has no claim step), values the template refuses fail the creation and leave the
prebuild in its pool, immutable ones that differ build cold; concurrent claimers each get their own claim build
with their own values."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest

from prebuildd.domain.errors import BuildError
from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.prebuilds.claim import CreateRequest, CreateResult
from prebuildd.store.db import Database
from tests.support.env import Env
from tests.support.pools import ReconcilerUnderTest, creator, prebuild_ids, reconciler

MANIFEST = """
provisioner = "exec"
[exec]
create = "create.sh"
start = "start.sh"
%(claim)s
[[parameters]]
name = "repo"
default = "app"
mutable = false
[[parameters]]
name = "editor"
default = "vim"
validation = { regex = "^[a-z]+$", error = "lowercase letters" }
[[presets]]
name = "app"
parameters = { repo = "app" }
[presets.prebuilds]
instances = 1
"""


def script(step: str) -> str:
    return (
        "#!/bin/sh\n"
        f'printf \'{{"step": "{step}", "seen": "%s %s %s"}}\' "$PREBUILDD_WORKSPACE_OWNER" '
        '"$PREBUILDD_PARAM_REPO" "$PREBUILDD_PARAM_EDITOR" > "$PREBUILDD_OUTPUTS_FILE"\n'
    )


FILES = {"create.sh": script("create"), "start.sh": script("start"), "claim.sh": script("claim")}


async def exec_pool(env: Env, *, claim_script: bool) -> tuple[UUID, UUID, ReconcilerUnderTest]:
    manifest = MANIFEST % {"claim": 'claim = "claim.sh"' if claim_script else ""}
    pushed = await env.push("ex", manifest, FILES)
    rec = reconciler(env)
    await rec.run_cycle()
    await env.run_jobs()
    [prebuild] = await prebuild_ids(env)
    return pushed.template_id, prebuild, rec


async def claim(env: Env, rec: ReconcilerUnderTest, template_id: UUID, **kw: Any) -> CreateResult:
    preset = await env.one("SELECT id FROM template_version_presets WHERE name = 'app'")
    return await creator(rec.services).create_workspace(
        CreateRequest(
            organization_id=env.org_id,
            owner_id=env.member_id,
            initiator_id=env.member_id,
            template_id=template_id,
            name="mine",
            preset_id=preset["id"],
            **kw,
        )
    )


async def claim_build_outputs(env: Env, result: CreateResult) -> dict[str, Any]:
    assert result.claimed and result.build is not None
    await env.run_jobs()
    build = await env.one(
        "SELECT b.reason, b.outputs, j.job_status, j.error FROM workspace_builds b "
        "JOIN provisioner_jobs j ON j.id = b.job_id WHERE b.id = %s",
        result.build.build_id,
    )
    assert build["reason"] == "claim" and build["job_status"] == "succeeded", build["error"]
    outputs: dict[str, Any] = build["outputs"]
    return outputs


async def test_a_mutable_value_given_at_claim_reaches_the_claim_step(env: Env) -> None:
    template_id, prebuild, rec = await exec_pool(env, claim_script=True)
    result = await claim(env, rec, template_id, parameters={"editor": "nano"})
    assert result.workspace_id == prebuild
    assert await claim_build_outputs(env, result) == {"step": "claim", "seen": "alice app nano"}


async def test_the_claim_step_runs_with_the_prebuilds_values_when_none_are_given(env: Env) -> None:
    template_id, _, rec = await exec_pool(env, claim_script=True)
    result = await claim(env, rec, template_id, parameters={"repo": "app", "editor": "vim"})
    assert await claim_build_outputs(env, result) == {"step": "claim", "seen": "alice app vim"}


async def test_without_a_claim_step_a_value_given_at_claim_runs_start(env: Env) -> None:
    template_id, prebuild, rec = await exec_pool(env, claim_script=False)
    plain = await claim(env, rec, template_id)
    assert plain.claimed and plain.build is None, "no claim step and no values: no job"

    await rec.run_cycle()
    await env.run_jobs()
    result = await creator(rec.services).create_workspace(
        CreateRequest(
            organization_id=env.org_id,
            owner_id=env.member_id,
            initiator_id=env.member_id,
            template_id=template_id,
            name="second",
            parameters={"repo": "app", "editor": "emacs"},
        )
    )
    assert result.workspace_id != prebuild
    assert await claim_build_outputs(env, result) == {"step": "start", "seen": "alice app emacs"}


@pytest.mark.parametrize(
    ("parameters", "named"),
    [({"editor": "NANO!"}, "editor"), ({"editr": "nano"}, "editr")],
)
async def test_a_value_the_template_refuses_fails_and_the_prebuild_stays(
    env: Env, parameters: dict[str, str], named: str
) -> None:
    template_id, prebuild, rec = await exec_pool(env, claim_script=True)
    with pytest.raises(BuildError) as info:
        await claim(env, rec, template_id, parameters=parameters)
    assert info.value.status == 400 and named in info.value.message
    owner = await env.one("SELECT owner_id FROM workspaces WHERE id = %s", prebuild)
    assert owner["owner_id"] == PREBUILDS_USER_ID, "the refused claim was rolled back"
    assert await prebuild_ids(env) == [prebuild]


async def test_an_immutable_value_that_differs_builds_cold(env: Env) -> None:
    template_id, prebuild, rec = await exec_pool(env, claim_script=True)
    result = await claim(env, rec, template_id, parameters={"repo": "other"})
    assert not result.claimed and result.build is not None
    assert await prebuild_ids(env) == [prebuild]
    await env.run_jobs()
    cold = await env.one("SELECT outputs FROM workspace_builds WHERE id = %s", result.build.build_id)
    assert cold["outputs"] == {"step": "create", "seen": "alice other vim"}


ECHO_POOL = """
provisioner = "echo"
[echo.claim]
[[parameters]]
name = "editor"
default = "vim"
[[presets]]
name = "app"
[presets.prebuilds]
instances = 10
"""


async def test_concurrent_claims_each_get_their_own_claim_build_with_their_values(
    env: Env, database_url: str
) -> None:
    pushed = await env.push("echo", ECHO_POOL)
    rec = reconciler(env)
    await rec.run_cycle()
    await env.run_jobs(limit=1000)
    assert len(await prebuild_ids(env)) == 10
    preset = await env.one("SELECT id FROM template_version_presets WHERE name = 'app'")
    big = await Database(database_url, min_size=5, max_size=40).open()
    try:
        rec.services.db = big
        results = await asyncio.gather(
            *(
                creator(rec.services).create_workspace(
                    CreateRequest(
                        organization_id=env.org_id,
                        owner_id=env.member_id,
                        initiator_id=env.member_id,
                        template_id=pushed.template_id,
                        name=f"dev{i}",
                        preset_id=preset["id"],
                        parameters={"editor": f"ed{i}"},
                    )
                )
                for i in range(25)
            )
        )
    finally:
        await big.close()
    claimed = [r for r in results if r.claimed]
    assert len(claimed) == 10 and len({r.workspace_id for r in results}) == 25
    for i, result in enumerate(results):
        assert result.build is not None and result.build.workspace_id == result.workspace_id
        build = await env.one(
            "SELECT reason, parameters, build_number FROM workspace_builds WHERE id = %s",
            result.build.build_id,
        )
        assert build["parameters"]["editor"] == f"ed{i}"
        assert (build["reason"], build["build_number"]) == (
            ("claim", 2) if result.claimed else ("initiator", 1)
        )
    events = await env.one("SELECT count(*) AS n FROM events WHERE kind = 'claim.build'")
    assert events["n"] == 10
