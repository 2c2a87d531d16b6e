"""The systemd units of deploy/systemd: `systemd-analyze verify` accepts them without a warning, `systemd-analyze
security` rates them hardened, and their ExecStart lines are command lines the real CLI accepts, with the
server on its state directory as the unprivileged `prebuildd` user.

`systemd-analyze verify` needs the ExecStart binary to exist: the test verifies a copy of each unit whose
ExecStart points at the `prebuildd` of the running Python environment instead of the shipped
/usr/local/bin/prebuildd (nothing else of the unit changes).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from prebuildd.runtime.config import ServerConfig
from tests.support.deploy import DEPLOY, command_envvars, parse_command, require_tool

UNITS = DEPLOY / "systemd"
SHIPPED_BINARY = "/usr/local/bin/prebuildd"
SERVER_UNIT = UNITS / "prebuildd.service"
PROVISIONER_UNIT = UNITS / "prebuildd-provisioner.service"
# `systemd-analyze security --threshold` is in tenths: 30 is an exposure of 3.0, inside systemd's "OK" band
# (below 5.0); both units rate 1.7 with systemd 252, an unhardened unit 9.6.
MAX_EXPOSURE = "30"


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit's sections, each key with every value it is given (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _service(path: Path) -> dict[str, str]:
    """The [Service] section, one value per key (the last, as systemd takes it for these keys)."""
    return {key: values[-1] for key, values in _unit(path)["Service"].items()}


def _local_copy(unit: Path, directory: Path) -> Path:
    """The unit with ExecStart on this environment's `prebuildd`, which exists here (see the module doc)."""
    binary = Path(sys.executable).parent / "prebuildd"
    assert binary.exists(), f"{binary}: the prebuildd entry point of this environment"
    text = unit.read_text()
    assert f"ExecStart={SHIPPED_BINARY} " in text, f"{unit.name}: ExecStart should run {SHIPPED_BINARY}"
    copy = directory / unit.name
    copy.write_text(text.replace(f"ExecStart={SHIPPED_BINARY} ", f"ExecStart={binary} "))
    return copy


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    analyze = require_tool("systemd-analyze", "the systemd unit checks")
    return subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=unit.parent,
    )


@pytest.mark.parametrize("unit", [SERVER_UNIT, PROVISIONER_UNIT], ids=lambda p: p.name)
def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(unit: Path, tmp_path: Path) -> None:
    result = _verify(_local_copy(unit, tmp_path))
    # verify exits 0 on unknown keys and bad values and only warns: any output is a defect of the unit.
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_verify_reports_a_misspelt_hardening_key(tmp_path: Path) -> None:
    """What the check above relies on: a typo in a hardening key is reported (exit code 0, a warning)."""
    copy = _local_copy(SERVER_UNIT, tmp_path)
    copy.write_text(copy.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    result = _verify(copy)
    assert "Unknown key 'ProtectSytem'" in result.stderr


@pytest.mark.parametrize("unit", [SERVER_UNIT, PROVISIONER_UNIT], ids=lambda p: p.name)
def test_systemd_analyze_security_rates_the_unit_hardened(unit: Path, tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze", "the systemd unit checks")
    copy = _local_copy(unit, tmp_path)
    hardened = subprocess.run(
        [analyze, "security", "--offline=yes", f"--threshold={MAX_EXPOSURE}", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert hardened.returncode == 0, hardened.stdout[-2000:] + hardened.stderr
    # The same unit without its hardening fails the threshold: the check can fail.
    bare = tmp_path / "bare" / unit.name
    bare.parent.mkdir()
    kept = ("[", "Description=", "ExecStart=", "Type=", "User=", "Group=", "DynamicUser=", "WantedBy=")
    bare.write_text("\n".join(line for line in copy.read_text().splitlines() if line.startswith(kept)) + "\n")
    exposed = subprocess.run(
        [analyze, "security", "--offline=yes", f"--threshold={MAX_EXPOSURE}", "--no-pager", str(bare)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=bare.parent,
    )
    assert exposed.returncode != 0, exposed.stdout[-2000:]


@pytest.mark.parametrize("unit", [SERVER_UNIT, PROVISIONER_UNIT], ids=lambda p: p.name)
def test_the_unit_is_sandboxed_with_a_state_directory(unit: Path) -> None:
    service = _service(unit)
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service.get(key) == value, f"{unit.name}: {key}={service.get(key)!r}, expected {value!r}"
    state = service["StateDirectory"]
    # ProtectSystem=strict leaves only the state directory writable: the process must work there.
    assert service["WorkingDirectory"] == f"/var/lib/{state}"
    assert service["Environment"] == f"HOME=/var/lib/{state}"


def test_the_server_runs_as_the_prebuildd_user_on_its_state_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = _service(SERVER_UNIT)
    # Never root, so the embedded PostgreSQL runs as this user too (embedded_pg switches users only as root).
    assert service["User"] == "prebuildd" and service["Group"] == "prebuildd"
    assert "DynamicUser" not in service
    sysusers = (UNITS / "prebuildd.sysusers").read_text().splitlines()
    entries = [line.split() for line in sysusers if line.strip() and not line.startswith("#")]
    assert [e[:2] for e in entries] == [["u", "prebuildd"]], "the sysusers.d file creates the user"
    assert f"/var/lib/{service['StateDirectory']}" in entries[0]

    argv = shlex.split(service["ExecStart"])
    assert argv[0] == SHIPPED_BINARY and argv[1] == "server"
    for name in list(os.environ):
        if name.startswith("PREBUILDD_"):
            monkeypatch.delenv(name)
    command, params = parse_command(argv[1:])
    given = {k: v for k, v in params.items() if k in ServerConfig.model_fields and v not in (None, (), [])}
    config = ServerConfig(**given)
    assert config.data_dir == Path("/var/lib") / service["StateDirectory"]
    assert config.log_format == "json"
    assert command.name == "server"
    # Optional ("-"): the embedded PostgreSQL needs no secret.
    assert service["EnvironmentFile"].startswith("-/etc/prebuildd/")


def test_the_provisioner_unit_runs_a_command_the_cli_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    service = _service(PROVISIONER_UNIT)
    assert service["DynamicUser"] == "yes"
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == SHIPPED_BINARY
    # The URL and the key come from the (required) environment file, never from the command line.
    assert service["EnvironmentFile"] == "/etc/prebuildd/provisioner.env"
    assert not any(a.startswith(("--key", "--url")) for a in argv)
    monkeypatch.setenv("PREBUILDD_URL", "http://prebuildd.example.com:7080")
    monkeypatch.setenv("PREBUILDD_PROVISIONER_KEY", "pbk_example")
    command, params = parse_command(argv[1:])
    assert {"PREBUILDD_URL", "PREBUILDD_PROVISIONER_KEY"} <= command_envvars(command)
    assert params["key"] == "pbk_example"
    assert params["work_dir"] == Path("/var/lib") / service["StateDirectory"]
    # The comment's example file names exactly the variables the command reads.
    header = PROVISIONER_UNIT.read_text()
    assert "PREBUILDD_URL=" in header and "PREBUILDD_PROVISIONER_KEY=" in header
