"""What the CLI prints at 80 columns, against golden files: the list commands and `prebuilds status` rendered from
recorded API answers (tests/support/fake_api.py), with every line checked to fit as well as compared.

Regenerate the golden files after an intended change with ``PREBUILDD_UPDATE_GOLDEN=1`` and read the diff.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from prebuildd.cli.cmd_prebuilds import first_error_line, shell_lines
from prebuildd.cli.output import age
from tests.support.fake_api import run_cli

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
WIDTH = 80
ERROR = (
    "create.sh exited with status 3 after 2s: the workspace image registry.example.com/team/base:2026.03 "
    "could not be pulled\nfailing on purpose\n(see the build log)"
)


def ago(**delta: float) -> str:
    return (NOW - timedelta(**delta)).isoformat()


def preset(template: str, name: str, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "preset_id": "6a0c3c3e-0000-4000-8000-000000000001",
        "template": template,
        "preset": name,
        "version": "v3",
        "active": True,
        "status": "healthy",
        "desired": 3,
        "running": 3,
        "eligible": 3,
        "expired": 0,
        "starting": 0,
        "stopping": 0,
        "deleting": 0,
        "failed": 0,
        "next_action": "at target: desired 3, running 3",
        "blocked": None,
        "backoff_until": None,
        "hard_limit_reason": "",
        "schedule_problem": None,
        "last_decision": None,
        "last_decision_at": None,
        "extra": {"hit_rate": {"claims_hour": 9, "misses_hour": 1}},
        "error": None,
        "target_source": "scheduled",
        "sizing": "desired 3 (scheduled)",
        "recommended": None,
        "recommendation": "",
    }
    return base | changes


STATUS = {
    "paused": False,
    "presets": [
        preset("python-dev", "small"),
        preset(
            "data-science-notebooks-gpu",
            "a100-large-with-cuda",
            status="backing_off",
            running=1,
            eligible=1,
            failed=2,
            next_action="create 2 at 12:05:00Z: desired 3, running 1",
            blocked=f"backing off until 2026-03-02 12:05:00Z (2 failed builds, last: {ERROR})",
            backoff_until="2026-03-02T12:05:00Z",
            error=f"2 failed builds, last: {ERROR}",
            target_source="autoscale",
            recommended=5,
            recommendation="pool 3, recommended 5 for 95% hits",
            extra={"hit_rate": {"claims_hour": 1, "misses_hour": 3}},
        ),
        preset(
            "go",
            "tiny",
            status="hard_limited",
            desired=1,
            running=0,
            eligible=0,
            failed=3,
            next_action="no creates: desired 1, running 0; `prebuildd prebuilds retry` resumes them",
            hard_limit_reason=f"last 3 creations failed: {ERROR}",
            error=f"last 3 creations failed: {ERROR}",
            extra={"hit_rate": {"claims_hour": 0, "misses_hour": 0}},
        ),
        preset("go", "large", status="inactive", desired=0, running=0, eligible=0, next_action="inactive"),
    ],
}

TEMPLATES = [
    {
        "name": "python-dev",
        "active_version": "v3",
        "deprecated": False,
        "deprecation_message": None,
        "updated_at": ago(minutes=3),
        "description": "Python 3.12 with uv, ruff and a warm package cache for the monorepo's services",
    },
    {
        "name": "data-science-notebooks-gpu",
        "active_version": "2026-03-01-nightly",
        "deprecated": True,
        "deprecation_message": "use python-dev",
        "updated_at": ago(days=2),
        "description": None,
    },
]

WORKSPACES = [
    {
        "id": "11111111-1111-4111-8111-111111111111",
        "name": "alice-feature-branch-with-a-long-name",
        "owner": "alice",
        "template": "data-science-notebooks-gpu",
        "latest_build": {
            "version": "2026-03-01-nightly",
            "transition": "start",
            "status": "failed",
            "created_at": ago(minutes=42),
            "error": ERROR,
        },
    },
    {
        "id": "22222222-2222-4222-8222-222222222222",
        "name": "api",
        "owner": "bob",
        "template": "python-dev",
        "latest_build": {
            "version": "v3",
            "transition": "start",
            "status": "succeeded",
            "created_at": ago(seconds=90),
            "error": None,
        },
    },
]

JOBS = [
    {
        "id": "33333333-3333-4333-8333-333333333333",
        "type": "workspace_build",
        "provisioner": "terraform",
        "status": "pending",
        "created_at": ago(minutes=5),
        "worker_id": None,
        "error": None,
        "waiting_reason": "no provisioner for kind terraform",
    },
    {
        "id": "44444444-4444-4444-8444-444444444444",
        "type": "template_version_import",
        "provisioner": "exec",
        "status": "failed",
        "created_at": ago(hours=1),
        "worker_id": "builder-7f9c-provisioner-daemon-2",
        "error": ERROR,
        "waiting_reason": None,
    },
    {
        "id": "66666666-6666-4666-8666-666666666666",
        "type": "workspace_build",
        "provisioner": "exec",
        "status": "succeeded",
        "created_at": ago(minutes=59, seconds=59),
        "worker_id": "builder-1",
        "error": None,
        "waiting_reason": None,
    },
]

USERS = [
    {
        "username": "alice",
        "role": "owner",
        "email": "alice.longname@platform-engineering.example.com",
        "suspended": False,
        "created_at": ago(days=30),
    },
    {"username": "bob", "role": "member", "email": None, "suspended": True, "created_at": ago(days=1)},
]

TOKENS = [
    {
        "id": "55555555-5555-4555-8555-555555555555",
        "name": "ci-pipeline-token-for-the-monorepo",
        "created_at": ago(days=3),
        "expires_at": (NOW + timedelta(days=27)).isoformat(),
        "last_used_at": ago(minutes=1),
        "revoked_at": None,
    },
]

PRESETS = [
    {
        "name": "a100-large-with-cuda",
        "desired_instances": 3,
        "ttl_seconds": 86400,
        "timezone": "Europe/Amsterdam",
        "schedules": [{"cron": "* 8-18 * * 1-5", "instances": 5}, {"cron": "* 0-7 * * *", "instances": 1}],
        "autoscale": None,
        "expression": None,
        "parameters": {"gpu": "a100", "cuda": "12.4"},
    },
]

CASES: dict[str, tuple[list[str], dict[str, Any]]] = {
    "prebuilds-status": (["prebuilds", "status"], {"GET /prebuilds/status": STATUS}),
    "templates-list": (["templates", "list"], {"GET /templates": TEMPLATES}),
    "workspaces-list": (["workspaces", "list", "--all"], {"GET /workspaces": WORKSPACES}),
    "jobs-list": (["jobs", "list"], {"GET /jobs": JOBS}),
    "jobs-list-wide": (["jobs", "list", "--wide"], {"GET /jobs": JOBS}),
    "prebuilds-status-wide": (["prebuilds", "status", "--wide"], {"GET /prebuilds/status": STATUS}),
    "users-list": (["users", "list"], {"GET /users": USERS}),
    "tokens-list": (["tokens", "list"], {"GET /tokens": TOKENS}),
    "presets-list": (["presets", "list", "data-science-notebooks-gpu"], {}),
}


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("PREBUILDD_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with PREBUILDD_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name}: the output differs from {path}"


def _assert_fits(text: str, width: int = WIDTH) -> None:
    too_wide = [line for line in text.splitlines() if len(line) > width]
    assert not too_wide, f"lines wider than {width} columns: {too_wide}"


@pytest.mark.parametrize("name", list(CASES))
def test_list_commands_at_80_columns(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    args, answers = CASES[name]
    if name == "presets-list":
        answers = {f"GET /templates/{args[-1]}/presets": PRESETS}
    ran = run_cli(monkeypatch, args, answers, now=NOW)
    assert ran.code == 0, ran
    if not name.endswith("-wide"):
        _assert_fits(ran.out)
    _check_golden(name, ran.out)


def test_status_is_short_and_points_to_explain(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = run_cli(monkeypatch, ["prebuilds", "status"], {"GET /prebuilds/status": STATUS})
    assert ran.code == 0, ran
    lines = ran.out.splitlines()
    header = lines[0].split()
    assert header[:2] == ["PRESET", "READY"] and header[-1] == "NEXT", "no header is cut"
    rows = {line.split()[0]: line for line in lines[1:5]}
    assert rows["go/tiny"].split()[1:] == ["0/1", "0", "3", "limited", "-", "no", "creates"]
    backing_off = next(line for line in lines[1:5] if "backoff" in line)
    assert backing_off.endswith("create 2 at 12:05:00Z"), "what waits says when, never 'creating'"
    # each held pool: the first line of its error (never the second), and the command showing all of it
    assert "failing on purpose" not in ran.out
    assert "  the whole error: prebuildd prebuilds explain go tiny" in lines
    assert "  prebuildd prebuilds explain data-science-notebooks-gpu a100-large-with-cuda" in lines
    at = lines.index("go/tiny:")
    assert lines[at + 1].startswith("  last 3 creations failed: create.sh exited with status 3 after 2s: the")
    assert lines[at + 1].endswith("…")
    assert sum(1 for line in lines if "the whole error" in line) == 2


def test_status_wide_and_json_hold_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {"GET /prebuilds/status": STATUS}
    wide = run_cli(monkeypatch, ["prebuilds", "status", "--wide"], answers)
    assert wide.code == 0, wide
    header = wide.out.splitlines()[0].split()
    assert header[0] == "TEMPLATE" and "ELIGIBLE" in header and header[-1] == "ERROR"
    assert "data-science-notebooks-gpu  a100-large-with-cuda" in wide.out, "nothing cut in --wide"
    assert "create 2 at 12:05:00Z: desired 3, running 1" in wide.out
    assert "failing on purpose" in wide.out, "the whole error, on one line"
    as_json = run_cli(monkeypatch, ["prebuilds", "status", "--json"], answers)
    assert "failing on purpose\\n(see the build log)" in as_json.out


ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*3[0-9]m")


def test_status_colours_only_on_a_terminal_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {"GET /prebuilds/status": STATUS}
    piped = run_cli(monkeypatch, ["prebuilds", "status"], answers)
    assert "\x1b[" not in piped.out, "no escape codes in a pipe"
    terminal = run_cli(monkeypatch, ["prebuilds", "status"], answers, env={"FORCE_COLOR": "1"})
    assert ANSI_COLOUR.search(terminal.out), terminal
    no_color = run_cli(
        monkeypatch, ["prebuilds", "status"], answers, env={"FORCE_COLOR": "1", "NO_COLOR": "1"}
    )
    assert not ANSI_COLOUR.search(no_color.out), no_color


@pytest.mark.parametrize("columns", [80, 100, 132])
def test_status_fits_any_width_from_60_columns(columns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    ran = run_cli(monkeypatch, ["prebuilds", "status"], {"GET /prebuilds/status": STATUS}, columns=columns)
    _assert_fits(ran.out, columns)
    assert ran.out.splitlines()[0].split()[-1] == "NEXT"


def test_the_fit_check_fails_on_a_wide_line() -> None:
    with pytest.raises(AssertionError, match="wider than 80"):
        _assert_fits("x" * 81)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["workspaces", "create"], "error: Missing argument 'NAME'."),
        (
            ["jobs", "list", "--status", "done"],
            "error: Invalid value for '--status' / '-s': 'done': expected one of",
        ),
        (
            ["workspaces", "create", "w", "-t", "t", "--timeout", "soon"],
            "error: Invalid value for '--timeout'",
        ),
        (["nope"], "error: No such command 'nope'."),
        (
            ["workspaces", "stop", "w", "--timeout", "1m"],
            "error: Invalid value for --timeout: --timeout bounds --wait",
        ),
    ],
)
def test_usage_errors_look_like_every_other_error(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = run_cli(monkeypatch, args, {})
    assert ran.code == 2, ran
    lines = ran.err.splitlines()
    assert lines[0].startswith(message), ran
    assert lines[1].startswith("Usage: prebuildd "), ran
    assert lines[2].startswith("See `prebuildd") and lines[2].endswith(" --help`."), ran
    assert len(lines) == 3 and ran.out == "", "no box, no help page: three lines on stderr"


def test_server_errors_are_one_error_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"code": "forbidden", "message": "owners only", "detail": None})

    ran = run_cli(monkeypatch, ["users", "list"], {"GET /users": refused})
    assert (ran.code, ran.err, ran.out) == (1, "error: owners only\n", "")


def test_an_error_shows_its_first_line_with_what_it_introduces() -> None:
    assert first_error_line("create.sh exited with status 128:\nfatal: not found\nhint: x") == (
        "create.sh exited with status 128: fatal: not found …"
    )
    assert first_error_line("one line") == "one line"
    assert first_error_line("first\nsecond") == "first …"
    assert first_error_line("\n\n") == ""


@pytest.mark.parametrize("width", [30, 50, 80])
def test_a_long_command_is_broken_as_a_shell_reads_it(width: int) -> None:
    words = [
        "prebuildd prebuilds explain",
        "platform-engineering-devbox",
        "fails-every-time-with-a-long-name",
    ]
    lines = shell_lines(words, width)
    assert all(line.endswith(" \\") for line in lines[:-1])
    assert " ".join(line.removesuffix(" \\").strip() for line in lines) == " ".join(words)
    assert all(len(line) <= width for line in lines if len(line.strip()) + 6 <= width)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s ago"),
        (59, "59s ago"),
        (90, "1m30s ago"),
        (3599, "59m ago"),
        (3600 + 120, "1h2m ago"),
        (86400 * 2 + 3600 * 5, "2d5h ago"),
        (86400 * 30, "30d ago"),
        (-86400 * 27, "in 27d"),
    ],
)
def test_ages_are_short(seconds: int, shown: str) -> None:
    assert age((NOW - timedelta(seconds=seconds)).isoformat(), NOW) == shown
    assert len(shown) <= 9
