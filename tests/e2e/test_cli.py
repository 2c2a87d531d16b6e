"""The client CLI as users run it: real `python -m prebuildd` processes against a real server on a real port.

The server runs in the test's event loop; each CLI call is an asyncio subprocess, so the server keeps serving
while the CLI waits on it. Every call gets its own environment: a config directory of the test's
(``PREBUILDD_CONFIG_DIR``) and, for the users other than the owner, ``PREBUILDD_URL``/``PREBUILDD_TOKEN``.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from prebuildd.server.process import OWNER_TOKEN_FILE
from tests.support.cli import Cli
from tests.support.server import RunningServer
from tests.support.templates import write_template
from tests.support.waiting import wait_for

TINY_TEMPLATE = """
provisioner = "exec"
display_name = "Tiny"
description = "Echoes its greeting; fails on request."

[exec]
create = "create.sh"
delete = "delete.sh"

[[parameters]]
name = "greeting"
type = "string"
default = "hello"

[[parameters]]
name = "fail"
type = "bool"
default = false
"""
TINY_FILES = {
    "create.sh": "#!/bin/sh\n"
    'echo "greeting: $PREBUILDD_PARAM_GREETING"\n'
    'if [ "$PREBUILDD_PARAM_FAIL" = "true" ]; then echo "failing on purpose"; exit 3; fi\n'
    'echo "workspace $PREBUILDD_WORKSPACE_NAME ready"\n',
    "delete.sh": '#!/bin/sh\necho "removing $PREBUILDD_WORKSPACE_NAME"\n',
}
BROKEN_IMPORT_TEMPLATE = """
provisioner = "exec"
[exec]
create = "missing.sh"
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_template(tmp_path / "tiny", TINY_TEMPLATE, TINY_FILES)


@pytest.fixture
async def owner(running_server: RunningServer, tmp_path: Path) -> Cli:
    """A CLI logged in as the first owner, with the token file the server wrote."""
    cli = Cli(tmp_path / "owner-config")
    token_file = running_server.data_dir / OWNER_TOKEN_FILE
    result = await cli.ok("login", running_server.url, "--token-file", str(token_file))
    assert "as owner" in result.err or "(owner)" in result.err, result
    return cli


async def _workspace_names(cli: Cli, *args: str) -> set[str]:
    return {workspace["name"] for workspace in (await cli.ok("workspaces", "list", "--json", *args)).json()}


async def test_login_saves_a_private_config_and_whoami_reads_it(
    owner: Cli, running_server: RunningServer
) -> None:
    config = owner.config_dir / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["url"] == running_server.url.rstrip("/")

    me = (await owner.ok("whoami", "--json")).json()
    assert me["role"] == "owner"
    assert running_server.url.rstrip("/") in (await owner.ok("whoami")).out

    await owner.ok("logout")
    assert not config.exists()
    result = await owner.refused("whoami")
    assert "not logged in" in result.err


async def test_push_create_wait_logs_and_delete(owner: Cli, tiny: Path, tmp_path: Path) -> None:
    pushed = await owner.ok("templates", "push", "tiny", str(tiny), "--activate", "-m", "first")
    assert "tiny v1" in pushed.err and "imported" in pushed.err, pushed

    templates = (await owner.ok("templates", "list", "--json")).json()
    assert [(t["name"], t["active_version"]) for t in templates] == [("tiny", "v1")]
    assert "tiny" in (await owner.ok("templates", "list")).out
    shown = await owner.ok("templates", "show", "tiny")
    assert "greeting" in shown.out and "v1" in shown.out
    versions = (await owner.ok("templates", "versions", "tiny", "--json")).json()
    assert [(v["name"], v["import_status"], v["message"]) for v in versions] == [("v1", "succeeded", "first")]
    assert (await owner.ok("presets", "list", "tiny", "--json")).json() == []

    created = await owner.ok(
        "workspaces", "create", "ws1", "--template", "tiny", "--param", "greeting=hi", "--wait"
    )
    assert "greeting: hi" in created.out and "workspace ws1 ready" in created.out, created
    assert "succeeded in" in created.err, created

    listed = (await owner.ok("workspaces", "list", "--json")).json()
    assert [(w["name"], w["latest_build"]["status"]) for w in listed] == [("ws1", "succeeded")]
    table = (await owner.ok("workspaces", "list")).out
    assert "ws1" in table and "start succeeded" in table
    assert "greeting: hi" in (await owner.ok("workspaces", "logs", "ws1")).out
    builds = (await owner.ok("workspaces", "builds", "ws1", "--json")).json()
    assert [b["build_number"] for b in builds] == [1]

    failed = await owner.refused(
        "workspaces", "create", "broken", "--template", "tiny", "--param", "fail=true", "--wait"
    )
    assert "failing on purpose" in failed.out, failed
    assert "build #1 (start) of broken failed" in failed.err and "exited with status 3" in failed.err, failed

    deleted = await owner.ok("workspaces", "delete", "ws1", "--wait")
    assert "removing ws1" in deleted.out, deleted
    assert "ws1" not in await _workspace_names(owner)
    gone = await owner.refused("workspaces", "show", "ws1")
    assert "no workspace named 'ws1'" in gone.err


async def test_push_reports_a_failed_import_and_a_broken_manifest(owner: Cli, tmp_path: Path) -> None:
    missing = write_template(tmp_path / "missing", BROKEN_IMPORT_TEMPLATE)
    result = await owner.refused("templates", "push", "missing", str(missing))
    assert "import of missing v1 failed" in result.err and "missing.sh" in result.err, result

    broken = write_template(tmp_path / "broken", 'provisioner = "exec"\n[exec]\ncreate = 3\n')
    result = await owner.refused("templates", "push", "broken", str(broken))
    assert "prebuildd.toml" in result.err, result
    listed = {t["name"] for t in (await owner.ok("templates", "list", "--json")).json()}
    assert "broken" not in listed

    not_a_template = tmp_path / "empty"
    not_a_template.mkdir()
    result = await owner.refused("templates", "push", "empty", str(not_a_template))
    assert "prebuildd.toml" in result.err


async def test_members_see_only_their_own_and_revoked_tokens_are_refused(
    owner: Cli, running_server: RunningServer, tiny: Path, tmp_path: Path
) -> None:
    url = running_server.url
    await owner.ok("templates", "push", "tiny", str(tiny), "--activate")
    tokens: dict[str, str] = {}
    token_ids: dict[str, str] = {}
    for name in ("bob", "carol"):
        created = await owner.ok(
            "users", "create", name, "--role", "member", "--email", f"{name}@example.com"
        )
        assert f"Created user {name} (member)" in created.err
        issued = (
            await owner.ok("tokens", "create", f"{name}-cli", "--user", name, "--lifetime", "1d", "--json")
        ).json()
        tokens[name], token_ids[name] = issued["secret"], issued["token"]["id"]
    assert {"bob", "carol"} <= {u["username"] for u in (await owner.ok("users", "list", "--json")).json()}
    secret_only = await owner.ok("tokens", "create", "plain")
    assert secret_only.out.strip().startswith("pbt_") and len(secret_only.out.splitlines()) == 1

    bob = owner.as_user(url, tokens["bob"], tmp_path / "bob-config")
    carol = owner.as_user(url, tokens["carol"], tmp_path / "carol-config")
    assert (await bob.ok("whoami", "--json")).json()["username"] == "bob"

    created = (await carol.ok("workspaces", "create", "carols", "--template", "tiny", "--json")).json()
    carols_id = created["id"]
    assert await _workspace_names(carol) == {"carols"}
    assert await _workspace_names(bob) == set()
    assert "carols" in await _workspace_names(owner, "--all")

    by_id = await bob.refused("workspaces", "show", carols_id)
    assert "not found" in by_id.err
    await bob.refused("workspaces", "show", "carol/carols")
    by_name = await bob.refused("workspaces", "delete", "carols")
    assert "no workspace named 'carols'" in by_name.err
    await bob.refused("workspaces", "logs", carols_id)
    assert (await owner.ok("workspaces", "show", "carol/carols", "--json")).json()["id"] == carols_id

    push = await bob.refused("templates", "push", "tiny", str(tiny))
    assert "template-admin" in push.err, push
    assert "owner" in (await bob.refused("users", "create", "mallory")).err

    await owner.ok("tokens", "revoke", token_ids["bob"])
    revoked = await bob.refused("whoami")
    assert "revoked" in revoked.err and "prebuildd login" in revoked.err, revoked
    assert (await carol.ok("whoami", "--json")).json()["username"] == "carol"

    async def carols_build_done() -> bool:
        listed = (await carol.ok("workspaces", "list", "--json")).json()
        return bool(listed) and listed[0]["latest_build"]["status"] == "succeeded"

    await wait_for(carols_build_done, what="carol's workspace to be built")


async def test_login_with_a_bad_token_saves_nothing(running_server: RunningServer, tmp_path: Path) -> None:
    cli = Cli(tmp_path / "config")
    result = await cli.refused("login", running_server.url, "--token", "pbt_not_a_real_token")
    assert "invalid" in result.err
    assert not (tmp_path / "config" / "config.json").exists()


async def test_errors_without_a_server(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "config")
    result = await cli.refused("templates", "list")
    assert "not logged in" in result.err

    unreachable = Cli(
        tmp_path / "config", {"PREBUILDD_URL": "http://127.0.0.1:9", "PREBUILDD_TOKEN": "pbt_x"}
    )
    result = await unreachable.refused("workspaces", "list")
    assert "cannot connect to the prebuildd server at http://127.0.0.1:9" in result.err

    usage = await unreachable("workspaces", "list", "--all", "--owner", "bob")
    assert usage.code == 2
    usage = await unreachable("tokens", "create", "x", "--lifetime", "soon")
    assert usage.code == 2 and "invalid duration" in usage.err


async def test_a_preset_with_a_pool_hands_over_a_prebuild(owner: Cli, tmp_path: Path) -> None:
    pooled = write_template(
        tmp_path / "pooled",
        TINY_TEMPLATE + '\n[[presets]]\nname = "quick"\nparameters = { greeting = "hey" }\n'
        "[presets.prebuilds]\ninstances = 1\n",
        TINY_FILES,
    )
    await owner.ok("templates", "push", "pooled", str(pooled))
    presets = (await owner.ok("presets", "list", "pooled", "--json")).json()
    assert [(p["name"], p["desired_instances"]) for p in presets] == [("quick", 1)]
    assert "quick" in (await owner.ok("presets", "list", "pooled")).out

    async def prebuild_ready() -> bool:
        listed = (await owner.ok("workspaces", "list", "--all", "--template", "pooled", "--json")).json()
        return any(w["owner"] != "admin" and w["latest_build"]["status"] == "succeeded" for w in listed)

    await wait_for(prebuild_ready, timeout=30, what="a ready prebuild")
    claimed = await owner.ok(
        "workspaces", "create", "fast", "--template", "pooled", "--preset", "quick", "--wait"
    )
    assert "claimed a ready prebuild" in claimed.err, claimed
    shown = (await owner.ok("workspaces", "show", "fast", "--json")).json()
    assert shown["owner"] == "admin" and shown["latest_build"]["parameters"]["greeting"] == "hey"


@pytest.mark.timeout(360)  # dozens of CLI subprocesses, a few seconds each on a loaded 2-core machine
async def test_admin_commands(owner: Cli, running_server: RunningServer, tiny: Path, tmp_path: Path) -> None:
    queued = await owner.ok("templates", "push", "tiny", str(tiny), "--no-wait")
    assert "Import job" in queued.err

    async def imported() -> bool:
        versions = (await owner.ok("templates", "versions", "tiny", "--json")).json()
        return bool(versions[0]["import_status"] == "succeeded")

    await wait_for(imported, what="the import of tiny v1")
    (tiny / "extra.txt").write_text("v2\n")
    second = await owner.ok("templates", "push", "tiny", str(tiny), "-m", "second")
    assert "it is not active" in second.err, second
    assert (await owner.ok("templates", "show", "tiny", "--json")).json()["active_version"] == "v1"
    await owner.ok("templates", "activate", "tiny", "v2")
    assert (await owner.ok("templates", "show", "tiny", "--json")).json()["active_version"] == "v2"
    assert "v9" in (await owner.refused("templates", "activate", "tiny", "v9")).err

    await owner.ok("templates", "deprecate", "tiny", "--message", "use tiny2")
    shown = (await owner.ok("templates", "show", "tiny", "--json")).json()
    assert (shown["deprecated"], shown["deprecation_message"]) == (True, "use tiny2")
    assert "use tiny2" in (await owner.ok("templates", "list")).out
    await owner.ok("templates", "deprecate", "tiny", "--undo")
    assert (await owner.ok("templates", "show", "tiny", "--json")).json()["deprecated"] is False

    jobs = (await owner.ok("jobs", "list", "--json")).json()
    assert {j["type"] for j in jobs} == {"template_version_import"} and len(jobs) == 2
    assert (
        len((await owner.ok("jobs", "list", "--status", "succeeded", "--limit", "1", "--json")).json()) == 1
    )
    assert (await owner("jobs", "list", "--status", "done")).code == 2
    assert "already finished" in (await owner.refused("jobs", "cancel", jobs[0]["id"])).err

    await owner.ok("users", "create", "dave")
    secret = (await owner.ok("tokens", "create", "dave-cli", "--user", "dave")).out.strip()
    dave = owner.as_user(running_server.url, secret, tmp_path / "dave-config")
    await dave.refused("templates", "push", "tiny", str(tiny))
    await owner.ok("users", "set-role", "dave", "template-admin")
    assert "v3" in (await dave.ok("templates", "push", "tiny", str(tiny))).err
    await owner.ok("users", "suspend", "dave")
    await dave.refused("whoami")
    await owner.ok("users", "suspend", "dave", "--undo")
    assert (await dave.ok("whoami", "--json")).json()["role"] == "template-admin"
    assert (await owner("users", "set-role", "dave", "boss")).code == 2

    await dave.ok("workspaces", "create", "daves", "--template", "tiny", "--wait")
    assert "daves" in await _workspace_names(owner, "--owner", "dave")
    assert "daves" in (await owner.refused("templates", "delete", "tiny")).err
    await owner.ok("workspaces", "delete", "dave/daves", "--wait")
    await owner.ok("templates", "delete", "tiny")
    assert "not found" in (await owner.refused("templates", "show", "tiny")).err


CLAIMY_TEMPLATE = """
provisioner = "exec"
[exec]
create = "create.sh"
claim = "claim.sh"
delete = "delete.sh"

[[parameters]]
name = "greeting"
default = "hello"

[[presets]]
name = "quick"
[presets.prebuilds]
instances = 1
"""
CLAIMY_FILES = {
    "create.sh": "#!/bin/sh\necho preparing\n",
    "claim.sh": "#!/bin/sh\n"
    'if [ "$PREBUILDD_PARAM_GREETING" = "boom" ]; then echo "personalisation failed"; exit 4; fi\n'
    'printf \'{"for": "%s", "greeting": "%s"}\' "$PREBUILDD_WORKSPACE_OWNER" "$PREBUILDD_PARAM_GREETING" '
    '> "$PREBUILDD_OUTPUTS_FILE"\n',
    "delete.sh": "#!/bin/sh\necho removing\n",
}


async def test_claim_builds_show_in_builds_explain_and_metrics(
    owner: Cli, running_server: RunningServer, tmp_path: Path
) -> None:
    await owner.ok(
        "templates", "push", "claimy", str(write_template(tmp_path / "c", CLAIMY_TEMPLATE, CLAIMY_FILES))
    )

    async def prebuild_ready() -> bool:
        listed = (await owner.ok("workspaces", "list", "--owner", "prebuilds", "--json")).json()
        return any(w["latest_build"]["status"] == "succeeded" for w in listed)

    await wait_for(prebuild_ready, timeout=30, what="a ready prebuild")
    created = await owner.ok(
        "workspaces", "create", "mine", "-t", "claimy", "--preset", "quick", "-p", "greeting=hi", "--wait"
    )
    assert "claimed a ready prebuild" in created.err and "claim build #2" in created.err, created
    shown = (await owner.ok("workspaces", "show", "mine", "--json")).json()
    build = shown["latest_build"]
    assert build["reason"] == "claim" and build["status"] == "succeeded"
    assert build["outputs"] == {"for": "admin", "greeting": "hi"}
    assert "claim" in (await owner.ok("workspaces", "show", "mine")).out
    listed = (await owner.ok("workspaces", "builds", "mine")).out
    assert "claim" in listed and "prebuild" in listed

    # A failing claim build: the workspace is the user's, with a failed build.
    await wait_for(prebuild_ready, timeout=30, what="the replacement prebuild")
    failed = await owner.refused(
        "workspaces", "create", "bad", "-t", "claimy", "--preset", "quick", "-p", "greeting=boom", "--wait"
    )
    assert "claimed a ready prebuild" in failed.err and "personalisation failed" in failed.err, failed
    bad = (await owner.ok("workspaces", "show", "bad", "--json")).json()
    assert bad["owner"] == "admin" and not bad["deleted"]
    assert bad["latest_build"]["reason"] == "claim" and bad["latest_build"]["status"] == "failed"

    explained = await owner.ok("prebuilds", "explain", "claimy", "quick")
    assert "claim builds" in explained.out and "2 in the last day: 1 succeeded, 1 failed" in explained.out
    assert "claim.build" in explained.out and "values given at claim: greeting=boom" in explained.out
    counts = (await owner.ok("prebuilds", "explain", "claimy", "quick", "--json")).json()["claim_builds"]
    assert (counts["total"], counts["succeeded"], counts["failed"]) == (2, 1, 1)
    assert counts["avg_seconds"] is not None and "exited with status 4" in (counts["last_error"] or "")

    async with running_server.client() as client:
        metrics = (await client.get("/metrics")).text
    labels = 'preset="quick",template="claimy"}'
    assert "prebuildd_claim_builds_total{organization=" in metrics
    assert any(
        line.startswith("prebuildd_claim_builds_total") and line.endswith(f"{labels} 2.0")
        for line in metrics.splitlines()
    ), metrics
    assert any(
        line.startswith("prebuildd_claim_builds_failed_total") and line.endswith(f"{labels} 1.0")
        for line in metrics.splitlines()
    )
    assert any(
        line.startswith("prebuildd_claim_build_duration_seconds_count") and line.endswith(f"{labels} 2.0")
        for line in metrics.splitlines()
    )
