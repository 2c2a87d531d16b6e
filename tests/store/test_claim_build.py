"""Claim builds of Terraform templates, with real ``terraform`` (``terraform_data`` + ``local-exec``, no provider
download): ``[terraform] claim_build = true`` re-applies as the new owner with the state of the prebuild, values
given at claim reach the build, a failing claim build leaves the workspace its user's, and without
``claim_build`` a claim starts no job. Skips where Terraform is absent, fails so under CI=true."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from prebuildd.domain.identity import PREBUILDS_USER_ID
from prebuildd.domain.jobs import JobPriority
from prebuildd.prebuilds.claim import CreateRequest, CreateResult
from tests.support.env import Env
from tests.support.pools import ReconcilerUnderTest, creator, operations, prebuild_ids, reconciler
from tests.support.terraform import require_terraform

MAIN_TF = """
variable "prebuildd_workspace_owner" {
  type    = string
  default = ""
}
variable "prebuildd_workspace_owner_id" {
  type    = string
  default = ""
}
variable "prebuildd_workspace_name" {
  type    = string
  default = ""
}
variable "prebuildd_is_claim" {
  type    = bool
  default = false
}
variable "prebuildd_is_prebuild" {
  type    = bool
  default = false
}
variable "prebuildd_data_dir" {
  type = string
}
variable "greeting" {
  type    = string
  default = "hello"
}
variable "region" {
  type    = string
  default = "eu"
}

# Built once for the prebuild: its id must survive the claim (the state is carried over).
resource "terraform_data" "home" {
  input = var.prebuildd_data_dir
  provisioner "local-exec" {
    command = "mkdir -p '${var.prebuildd_data_dir}' && echo created >> '${var.prebuildd_data_dir}/home.log'"
  }
}

# Cheap to replace: reads what changes at a claim.
resource "terraform_data" "profile" {
  triggers_replace = [var.prebuildd_workspace_owner, var.greeting]
  depends_on       = [terraform_data.home]
  provisioner "local-exec" {
    command = "echo '${var.greeting} ${var.prebuildd_workspace_owner}' > '${var.prebuildd_data_dir}/profile'"
  }
}
%(extra)s
output "owner" {
  value = var.prebuildd_workspace_owner
}
output "owner_id" {
  value = var.prebuildd_workspace_owner_id
}
output "workspace_name" {
  value = var.prebuildd_workspace_name
}
output "is_claim" {
  value = var.prebuildd_is_claim
}
output "is_prebuild" {
  value = var.prebuildd_is_prebuild
}
output "greeting" {
  value = var.greeting
}
output "home_id" {
  value = terraform_data.home.id
}
output "data_dir" {
  value = var.prebuildd_data_dir
}
"""

FAIL_ON_CLAIM = """
resource "terraform_data" "claim_hook" {
  count = var.prebuildd_is_claim ? 1 : 0
  provisioner "local-exec" {
    command = "echo 'the claim hook failed' >&2; exit 7"
  }
}
"""

MANIFEST = """
provisioner = "terraform"
%(terraform)s
[[parameters]]
name = "region"
mutable = false

[[presets]]
name = "dev"
[presets.prebuilds]
instances = 1
"""


async def terraform_pool(
    env: Env, *, claim_build: bool | None, fail_on_claim: bool = False
) -> tuple[UUID, UUID, ReconcilerUnderTest]:
    """A Terraform template with a pool of one (preset ``dev``), built: (template id, the prebuild, reconciler)."""
    require_terraform()
    section = "" if claim_build is None else f"[terraform]\nclaim_build = {str(claim_build).lower()}\n"
    files = {"main.tf": MAIN_TF % {"extra": FAIL_ON_CLAIM if fail_on_claim else ""}}
    pushed = await env.push("tf", MANIFEST % {"terraform": section}, files)
    import_job = await env.one(
        "SELECT j.job_status, j.error FROM template_versions v JOIN provisioner_jobs j ON j.id = v.job_id "
        "WHERE v.id = %s",
        pushed.version_id,
    )
    assert import_job["job_status"] == "succeeded", import_job["error"]
    rec = reconciler(env)
    await rec.run_cycle()
    await env.run_jobs()
    [prebuild] = await prebuild_ids(env)
    return pushed.template_id, prebuild, rec


async def claim(
    env: Env, rec: ReconcilerUnderTest, template_id: UUID, name: str = "mine", **kw: Any
) -> CreateResult:
    preset = await env.one("SELECT id FROM template_version_presets WHERE name = 'dev'")
    return await creator(rec.services).create_workspace(
        CreateRequest(
            organization_id=env.org_id,
            owner_id=env.member_id,
            initiator_id=env.member_id,
            template_id=template_id,
            name=name,
            preset_id=preset["id"],
            **kw,
        )
    )


def metric(rec: ReconcilerUnderTest, name: str, env: Env) -> float | None:
    labels = {"organization": str(env.org_id), "template": "tf", "preset": "dev"}
    return rec.services.metrics.registry.get_sample_value(name, labels)


async def builds(env: Env, workspace_id: UUID) -> list[dict[str, Any]]:
    async with env.db.transaction() as conn:
        cur = await conn.execute(
            "SELECT b.build_number, b.reason, b.transition, b.parameters, b.outputs, b.state, j.job_status, "
            "j.priority, j.error FROM workspace_builds b JOIN provisioner_jobs j ON j.id = b.job_id "
            "WHERE b.workspace_id = %s ORDER BY b.build_number",
            (workspace_id,),
        )
        return [dict(r) for r in await cur.fetchall()]


async def test_a_claim_build_reapplies_as_the_new_owner_with_the_prebuilds_state(env: Env) -> None:
    template_id, prebuild, rec = await terraform_pool(env, claim_build=True)
    [first] = await builds(env, prebuild)
    assert first["outputs"]["owner"] == "prebuilds" and first["outputs"]["is_prebuild"] is True

    result = await claim(env, rec, template_id, parameters={"greeting": "bonjour"})
    assert result.claimed and result.workspace_id == prebuild
    assert result.build is not None, "claim_build = true: the claim starts a claim build"
    pending = (await builds(env, prebuild))[-1]
    assert pending["reason"] == "claim" and pending["priority"] == JobPriority.HUMAN
    assert pending["job_status"] == "pending"
    assert pending["state"] == first["state"], "the claim build starts from the prebuild's state"

    assert await env.run_jobs() >= 1
    done = (await builds(env, prebuild))[1]
    assert done["job_status"] == "succeeded", done["error"]
    outputs = done["outputs"]
    # The owner's variables: the new owner, the name the user chose, a claim build of a claimed workspace.
    assert outputs["owner"] == "alice" and outputs["owner_id"] == str(env.member_id)
    assert outputs["workspace_name"] == "mine"
    assert outputs["is_claim"] is True and outputs["is_prebuild"] is False
    # The value given at claim for a mutable parameter reached the build.
    assert outputs["greeting"] == "bonjour" and done["parameters"]["greeting"] == "bonjour"
    # The state was carried over: the prebuilt resource is the same one, never created again.
    assert outputs["home_id"] == first["outputs"]["home_id"]
    data = Path(outputs["data_dir"])
    assert data.name == str(prebuild)
    assert (data / "home.log").read_text() == "created\n"
    assert (data / "profile").read_text() == "bonjour alice\n"

    # Counted at the claim, timed at its end; explain's events say why it ran.
    assert metric(rec, "prebuildd_claim_builds_total", env) == 1
    assert metric(rec, "prebuildd_claim_build_duration_seconds_count", env) == 1
    assert metric(rec, "prebuildd_claim_builds_failed_total", env) == 0
    _, events = await operations(rec).explain(env.org_id, "tf", "dev", show_errors=True)
    assert [e.kind for e in events][:2] == ["claim.build", "claim.succeeded"]
    assert events[0].message == "claim build #2 of mine queued (values given at claim: greeting=bonjour)"
    preset = await env.one("SELECT id FROM template_version_presets WHERE name = 'dev'")
    counts = await operations(rec).claim_builds(preset["id"], show_errors=True)
    assert (counts.total, counts.succeeded, counts.failed, counts.in_progress) == (1, 1, 0, 0)


async def test_a_claim_build_runs_without_values_given_at_claim(env: Env) -> None:
    template_id, prebuild, rec = await terraform_pool(env, claim_build=True)
    result = await claim(env, rec, template_id)
    assert result.claimed and result.build is not None
    await env.run_jobs()
    done = (await builds(env, prebuild))[1]
    assert done["job_status"] == "succeeded", done["error"]
    assert done["outputs"]["owner"] == "alice" and done["outputs"]["greeting"] == "hello"


@pytest.mark.parametrize("claim_build", [None, False])
async def test_without_claim_build_a_claim_starts_no_job(env: Env, claim_build: bool | None) -> None:
    template_id, prebuild, rec = await terraform_pool(env, claim_build=claim_build)
    jobs_before = await env.count("provisioner_jobs")
    result = await claim(env, rec, template_id)
    assert result.claimed and result.workspace_id == prebuild
    assert result.build is None
    assert await env.count("provisioner_jobs") == jobs_before
    assert [b["reason"] for b in await builds(env, prebuild)] == ["prebuild"]
    assert metric(rec, "prebuildd_claim_builds_total", env) is None
    assert metric(rec, "prebuildd_prebuilds_claimed_total", env) == 1
    owner = await env.one("SELECT owner_id, name FROM workspaces WHERE id = %s", prebuild)
    assert owner["owner_id"] == env.member_id and owner["name"] == "mine"


async def test_without_claim_build_a_value_given_at_claim_still_runs_a_claim_build(env: Env) -> None:
    template_id, prebuild, rec = await terraform_pool(env, claim_build=None)
    result = await claim(env, rec, template_id, parameters={"greeting": "hej"})
    assert result.claimed and result.build is not None
    await env.run_jobs()
    done = (await builds(env, prebuild))[1]
    assert done["reason"] == "claim" and done["job_status"] == "succeeded", done["error"]
    assert done["outputs"]["greeting"] == "hej" and done["outputs"]["owner"] == "alice"


async def test_an_immutable_value_that_differs_builds_cold(env: Env) -> None:
    template_id, prebuild, rec = await terraform_pool(env, claim_build=True)
    result = await claim(env, rec, template_id, parameters={"region": "us"})
    assert not result.claimed and result.workspace_id != prebuild
    assert await prebuild_ids(env) == [prebuild], "the prebuild stays in its pool"


async def test_a_failing_claim_build_leaves_the_workspace_its_users_with_a_failed_build(env: Env) -> None:
    template_id, prebuild, rec = await terraform_pool(env, claim_build=True, fail_on_claim=True)
    result = await claim(env, rec, template_id)
    assert result.claimed and result.build is not None
    await env.run_jobs()
    first, failed = await builds(env, prebuild)
    assert first["job_status"] == "succeeded"
    assert failed["reason"] == "claim" and failed["job_status"] == "failed"
    assert "the claim hook failed" in failed["error"] or "exit status 7" in failed["error"]
    workspace = await env.one("SELECT owner_id, name, deleted FROM workspaces WHERE id = %s", prebuild)
    assert workspace["owner_id"] == env.member_id and workspace["owner_id"] != PREBUILDS_USER_ID
    assert workspace["name"] == "mine" and not workspace["deleted"]
    assert metric(rec, "prebuildd_claim_builds_failed_total", env) == 1
    # The claim build's failure is the user's workspace's, not the pool's: the preset is not backed off.
    await rec.run_cycle()
    preset = await env.one("SELECT prebuild_status FROM template_version_presets WHERE name = 'dev'")
    assert preset["prebuild_status"] == "healthy"
    await env.run_jobs()
    [replacement] = await prebuild_ids(env)
    assert replacement != prebuild
