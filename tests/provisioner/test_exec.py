"""The exec provisioner runs real scripts as child processes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from prebuildd.domain import limits
from prebuildd.domain.jobs import FailureClass, Transition
from prebuildd.domain.manifest import ExecConfig, TemplateManifest
from prebuildd.domain.parameters import ParameterSpec
from prebuildd.provisioner.base import BuildContext, ImportContext, ProvisionerFailure
from prebuildd.provisioner.exec import ExecProvisioner
from tests.support.logs import Logs
from tests.support.processes import process_gone
from tests.support.provisioning import build_context
from tests.support.waiting import wait_for

DEADLINE = 10.0


def write_script(
    files: Path, name: str, body: str, *, executable: bool = False, shebang: bool = True
) -> None:
    path = files / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("#!/bin/sh\n" if shebang else "") + "set -eu\n" + body)
    path.chmod(0o755 if executable else 0o644)


def manifest(timeout: float | None = None, **scripts: str) -> TemplateManifest:
    return TemplateManifest(
        provisioner="exec",
        parameters=(ParameterSpec(name="cpu"), ParameterSpec(name="region")),
        exec=ExecConfig(timeout_seconds=timeout, **scripts),
    )


def context(m: TemplateManifest, files: Path, data: Path, **overrides: Any) -> BuildContext:
    return build_context(m, files, data, **({"parameters": {"cpu": "2", "region": "eu west"}} | overrides))


@pytest.fixture
def files(tmp_path: Path) -> Path:
    path = tmp_path / "files"
    path.mkdir()
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ws-1"


def read_env(data: Path) -> tuple[dict[str, str], str]:
    lines = (data / "env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    return env, (data / "cwd").read_text().strip()


def resolved(path: Path) -> str:
    return str(path.resolve())


def exists(path: str) -> bool:
    return Path(path).exists()


def read_pids(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()]


# --- environment, state, outputs ---------------------------------------------------------------------


async def test_environment_seen_by_the_script(
    files: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREBUILDD_TEST_LEAK", "must not be seen")
    write_script(files, "create.sh", 'env > "$PREBUILDD_DATA_DIR/env"\npwd > "$PREBUILDD_DATA_DIR/cwd"\n')
    ctx = context(
        manifest(create="create.sh"),
        files,
        data,
        preset_name="small",
        is_prebuild=True,
        access_url="http://prebuildd.test",
        extra_env={"EXTRA": "yes"},
    )
    await ExecProvisioner().run_build(ctx, Logs())

    env, cwd = read_env(data)
    expected = {
        "PREBUILDD_PARAM_CPU": "2",
        "PREBUILDD_PARAM_REGION": "eu west",
        "PREBUILDD_WORKSPACE_ID": "ws-1",
        "PREBUILDD_WORKSPACE_NAME": "dev",
        "PREBUILDD_WORKSPACE_OWNER": "alice",
        "PREBUILDD_WORKSPACE_OWNER_ID": "user-1",
        "PREBUILDD_TEMPLATE": "demo",
        "PREBUILDD_TEMPLATE_VERSION_ID": "v-1",
        "PREBUILDD_TRANSITION": "start",
        "PREBUILDD_BUILD_NUMBER": "1",
        "PREBUILDD_PRESET": "small",
        "PREBUILDD_IS_PREBUILD": "true",
        "PREBUILDD_IS_CLAIM": "false",
        "PREBUILDD_ACCESS_URL": "http://prebuildd.test",
        "PREBUILDD_DATA_DIR": str(data),
        "EXTRA": "yes",
        "PATH": os.environ["PATH"],
    }
    assert {key: env.get(key) for key in expected} == expected
    assert "PREBUILDD_TEST_LEAK" not in env
    assert Path(env["PREBUILDD_STATE_FILE"]).name == "state"
    assert Path(env["PREBUILDD_OUTPUTS_FILE"]).name == "outputs.json"
    assert not exists(env["PREBUILDD_STATE_FILE"]), "scratch files are removed after the build"
    assert cwd == resolved(files)


async def test_state_is_carried_from_build_to_build(files: Path, data: Path) -> None:
    write_script(
        files,
        "scripts/create.sh",
        'echo "create saw [$(cat "$PREBUILDD_STATE_FILE")]"\nprintf v1 > "$PREBUILDD_STATE_FILE"\n',
    )
    write_script(
        files,
        "scripts/start.sh",
        'echo "start saw [$(cat "$PREBUILDD_STATE_FILE")]"\nprintf v2 > "$PREBUILDD_STATE_FILE"\n',
    )
    write_script(files, "scripts/delete.sh", ': > "$PREBUILDD_STATE_FILE"\n')
    m = manifest(create="scripts/create.sh", start="scripts/start.sh", delete="scripts/delete.sh")
    provisioner = ExecProvisioner()
    logs = Logs()

    first = await provisioner.run_build(context(m, files, data), logs)
    assert first.state == b"v1"
    second = await provisioner.run_build(context(m, files, data, build_number=2, state=first.state), logs)
    assert second.state == b"v2"
    assert logs.lines() == ["create saw []", "start saw [v1]"]
    assert [stage for _, stage, _ in logs.records] == ["create", "start"]

    # No stop script: nothing runs and the state stays.
    stopped = await provisioner.run_build(
        context(m, files, data, build_number=3, state=second.state, transition=Transition.STOP), logs
    )
    assert stopped.state == b"v2"

    deleted = await provisioner.run_build(
        context(m, files, data, build_number=4, state=b"v2", transition=Transition.DELETE), logs
    )
    assert deleted.state is None


async def test_claim_build_runs_the_claim_script(files: Path, data: Path) -> None:
    write_script(files, "start.sh", "echo start\n")
    write_script(files, "claim.sh", 'echo "claimed by $PREBUILDD_WORKSPACE_OWNER $PREBUILDD_IS_CLAIM"\n')
    m = manifest(start="start.sh", claim="claim.sh")
    logs = Logs()
    result = await ExecProvisioner().run_build(
        context(m, files, data, build_number=2, is_claim=True, state=b"s"), logs
    )
    assert result.state == b"s"
    assert logs.records == [("info", "claim", "claimed by alice true")]


async def test_a_claim_build_without_a_claim_script_runs_start(files: Path, data: Path) -> None:
    # Such a claim build exists because the user gave other values for mutable parameters at claim time.
    write_script(files, "start.sh", 'echo "start $PREBUILDD_PARAM_EDITOR $PREBUILDD_IS_CLAIM"\n')
    m = manifest(start="start.sh")
    logs = Logs()
    await ExecProvisioner().run_build(
        context(m, files, data, build_number=2, is_claim=True, state=b"s", parameters={"editor": "nano"}),
        logs,
    )
    assert logs.records[-1] == ("info", "start", "start nano true")
    assert "running `start`" in logs.records[0][2]


async def test_outputs_json(files: Path, data: Path) -> None:
    write_script(
        files, "create.sh", 'printf \'{"url": "http://ws", "ports": [1, 2]}\' > "$PREBUILDD_OUTPUTS_FILE"\n'
    )
    result = await ExecProvisioner().run_build(context(manifest(create="create.sh"), files, data), Logs())
    assert result.outputs == {"url": "http://ws", "ports": [1, 2]}


@pytest.mark.parametrize(
    ("content", "reason"),
    [("{not json", "not valid JSON"), ("[1]", "JSON object"), ('{"x": NaN}', "NaN is not a JSON number")],
)
async def test_bad_outputs_fail_naming_the_file(files: Path, data: Path, content: str, reason: str) -> None:
    write_script(files, "create.sh", f"printf '{content}' > \"$PREBUILDD_OUTPUTS_FILE\"\n")
    with pytest.raises(ProvisionerFailure) as info:
        await ExecProvisioner().run_build(context(manifest(create="create.sh"), files, data), Logs())
    assert "PREBUILDD_OUTPUTS_FILE" in info.value.message
    assert reason in info.value.message
    assert info.value.message.startswith("create.sh: ")


# --- output -------------------------------------------------------------------------------------------


async def test_stdout_and_stderr_are_streamed_in_order(files: Path, data: Path) -> None:
    # The script waits for the log sink to acknowledge each line before writing the next one: the lines must
    # reach the sink while the script runs, in the order written.
    write_script(
        files,
        "create.sh",
        """
ack() {
    n=0
    while [ ! -e "$PREBUILDD_DATA_DIR/ack-$1" ]; do
        n=$((n + 1)); [ "$n" -lt 1000 ] || exit 9
        sleep 0.01
    done
}
echo out-1; ack out-1
echo err-1 >&2; ack err-1
echo out-2; ack out-2
echo err-2 >&2; ack err-2
printf 'no newline at the end'
""",
    )
    logs = Logs()
    logs.on_line = lambda line: (data / f"ack-{line}").touch()
    await ExecProvisioner().run_build(context(manifest(create="create.sh"), files, data), logs)
    assert logs.records == [
        ("info", "create", "out-1"),
        ("error", "create", "err-1"),
        ("info", "create", "out-2"),
        ("error", "create", "err-2"),
        ("info", "create", "no newline at the end"),
    ]


async def test_non_zero_exit_reports_the_last_lines(files: Path, data: Path) -> None:
    write_script(files, "scripts/create.sh", 'for i in $(seq 1 15); do echo "line $i"; done\nexit 3\n')
    with pytest.raises(ProvisionerFailure) as info:
        await ExecProvisioner().run_build(context(manifest(create="scripts/create.sh"), files, data), Logs())
    expected = "scripts/create.sh exited with status 3:\n" + "\n".join(f"line {i}" for i in range(6, 16))
    assert info.value.message == expected
    assert info.value.failure_class is FailureClass.BUILD


async def test_missing_script(files: Path, data: Path) -> None:
    with pytest.raises(ProvisionerFailure) as info:
        await ExecProvisioner().run_build(context(manifest(create="scripts/nope.sh"), files, data), Logs())
    assert "scripts/nope.sh" in info.value.message
    assert "not found" in info.value.message
    assert info.value.failure_class is FailureClass.BUILD


async def test_script_modes(files: Path, data: Path) -> None:
    """Not executable: run with /bin/sh; executable: run directly; executable without #!: /bin/sh too."""
    write_script(files, "plain.sh", "echo plain\n", shebang=False)
    write_script(files, "direct.py", "", executable=True)
    (files / "direct.py").write_text("#!/usr/bin/env python3\nprint('direct')\n")
    write_script(files, "noshebang.sh", "echo no-shebang\n", executable=True, shebang=False)
    logs = Logs()
    for script in ("plain.sh", "direct.py", "noshebang.sh"):
        await ExecProvisioner().run_build(context(manifest(create=script), files, data), logs)
    assert logs.lines() == ["plain", "direct", "no-shebang"]


# --- stopping -----------------------------------------------------------------------------------------

SPAWNS_A_CHILD = """
sleep 1000 &
echo "$$ $!" > "$PREBUILDD_DATA_DIR/pids"
echo started
wait
"""


async def test_timeout_interrupts_then_kills(files: Path, data: Path) -> None:
    write_script(files, "create.sh", "trap 'echo interrupted; exit 130' INT\n" + SPAWNS_A_CHILD)
    with pytest.raises(ProvisionerFailure) as info:
        await ExecProvisioner(grace_seconds=5).run_build(
            context(manifest(create="create.sh", timeout=0.5), files, data), Logs()
        )
    assert info.value.message.startswith("create.sh timed out after")
    assert "interrupted" in info.value.message, "the script got SIGINT and its trap ran"
    pids = read_pids(data / "pids")
    await wait_for(
        lambda: all(process_gone(pid) for pid in pids), timeout=DEADLINE, what="script and child gone"
    )


async def test_cancel_kills_the_whole_process_group(files: Path, data: Path) -> None:
    write_script(files, "create.sh", SPAWNS_A_CHILD)
    logs = Logs()
    task = asyncio.create_task(
        ExecProvisioner(grace_seconds=5).run_build(context(manifest(create="create.sh"), files, data), logs)
    )
    await wait_for(lambda: "started" in logs.lines(), timeout=DEADLINE, what="script started")
    pids = read_pids(data / "pids")
    assert not any(process_gone(pid) for pid in pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(
        lambda: all(process_gone(pid) for pid in pids), timeout=DEADLINE, what="script and child gone"
    )


async def test_cancel_kills_a_script_ignoring_the_interrupt(files: Path, data: Path) -> None:
    write_script(files, "create.sh", "trap '' INT\n" + SPAWNS_A_CHILD)
    logs = Logs()
    task = asyncio.create_task(
        ExecProvisioner(grace_seconds=0.3).run_build(context(manifest(create="create.sh"), files, data), logs)
    )
    await wait_for(lambda: "started" in logs.lines(), timeout=DEADLINE, what="script started")
    pids = read_pids(data / "pids")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(
        lambda: all(process_gone(pid) for pid in pids), timeout=DEADLINE, what="script and child gone"
    )


async def test_processes_left_behind_are_killed(files: Path, data: Path) -> None:
    # The background sleep inherits stdout: the build must neither hang on the open pipe nor leave it running.
    write_script(files, "create.sh", 'sleep 1000 &\necho "$!" > "$PREBUILDD_DATA_DIR/pids"\necho done\n')
    logs = Logs()
    result = await ExecProvisioner().run_build(context(manifest(create="create.sh"), files, data), logs)
    assert result.state is None
    assert logs.records[0] == ("info", "create", "done")
    assert logs.records[1][0] == "warn"
    assert "left processes running" in logs.records[1][2]
    pids = read_pids(data / "pids")
    await wait_for(lambda: all(process_gone(pid) for pid in pids), timeout=DEADLINE, what="child gone")


# --- import -------------------------------------------------------------------------------------------


async def test_import_checks_every_script(files: Path) -> None:
    write_script(files, "scripts/create.sh", "true\n")
    write_script(files, "scripts/stop.sh", "true\n")
    ok = manifest(create="scripts/create.sh", stop="scripts/stop.sh")
    result = await ExecProvisioner().import_version(
        ImportContext(version_id="v-1", files_dir=files, manifest=ok), Logs()
    )
    assert [spec.name for spec in result.parameters] == ["cpu", "region"]

    missing = manifest(create="scripts/create.sh", delete="scripts/delete.sh")
    with pytest.raises(ProvisionerFailure) as info:
        await ExecProvisioner().import_version(
            ImportContext(version_id="v-1", files_dir=files, manifest=missing), Logs()
        )
    assert (
        info.value.message == "prebuildd.toml: exec.delete: file scripts/delete.sh not found in the template"
    )


async def test_import_refuses_a_directory_and_an_escaping_symlink(files: Path, tmp_path: Path) -> None:
    (files / "scripts").mkdir()
    outside = tmp_path / "outside.sh"
    outside.write_text("true\n")
    (files / "link.sh").symlink_to(outside)
    for script, reason in (("scripts", "not a regular file"), ("link.sh", "outside the template")):
        m = manifest(create=script)
        with pytest.raises(ProvisionerFailure, match=reason):
            await ExecProvisioner().import_version(
                ImportContext(version_id="v-1", files_dir=files, manifest=m), Logs()
            )


async def test_a_failing_log_sink_stops_the_script(files: Path, data: Path) -> None:
    write_script(files, "create.sh", SPAWNS_A_CHILD)

    async def broken_sink(level: str, stage: str, line: str) -> None:
        raise RuntimeError("log store down")

    with pytest.raises(RuntimeError, match="log store down"):
        await ExecProvisioner(grace_seconds=5).run_build(
            context(manifest(create="create.sh"), files, data), broken_sink
        )
    pids = read_pids(data / "pids")
    await wait_for(
        lambda: all(process_gone(pid) for pid in pids), timeout=DEADLINE, what="script and child gone"
    )


async def test_a_flood_of_output_arrives_whole_and_in_order(files: Path, data: Path) -> None:
    write_script(files, "create.sh", "seq 1 20000\nhead -c 200000 /dev/zero | tr '\\0' x\necho\n")
    logs = Logs()
    await ExecProvisioner().run_build(context(manifest(create="create.sh"), files, data), logs)
    lines = logs.lines()
    assert lines[:20000] == [str(i) for i in range(1, 20001)]
    # A 200 000-byte line comes in 64 KiB pieces.
    assert "".join(lines[20000:]) == "x" * 200000
    assert len(lines) == 20000 + 4


async def test_the_workspace_directory_is_private(files: Path, data: Path) -> None:
    write_script(files, "create.sh", 'stat -c %a "$PREBUILDD_DATA_DIR" > "$PREBUILDD_DATA_DIR/mode"\n')
    os.makedirs(data)
    os.chmod(data, 0o755)  # made by an older version, open to everyone
    await ExecProvisioner().run_build(context(manifest(create="create.sh"), files, data), Logs())
    assert (data / "mode").read_text().strip() == "700"
    assert os.stat(data).st_mode & 0o777 == 0o700


async def test_a_value_beyond_the_limit_fails_as_config_before_the_script_runs(
    files: Path, data: Path
) -> None:
    write_script(files, "create.sh", 'touch "$PREBUILDD_DATA_DIR/ran"\n')
    big = "x" * (limits.PARAMETER_VALUE.maximum + 1)
    ctx = context(manifest(create="create.sh"), files, data, parameters={"cpu": big, "region": "eu"})
    with pytest.raises(ProvisionerFailure, match="parameter `cpu`: value too large") as failure:
        await ExecProvisioner().run_build(ctx, Logs())
    assert failure.value.failure_class is FailureClass.CONFIG
    assert not exists(str(data / "ran"))
