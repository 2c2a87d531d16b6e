"""The server's options are declared once (ServerConfig): help text, flags, variables, precedence, errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prebuildd.cli import app, server_command
from prebuildd.runtime.config import ServerConfig, config_options

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PREBUILDD_* variable of the machine running the tests leaks into these configs."""
    import os

    for name in list(os.environ):
        if name.startswith("PREBUILDD_"):
            monkeypatch.delenv(name)


def _help() -> str:
    result = CliRunner().invoke(app, ["server", "--help"], env={"COLUMNS": "400", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return result.output


def _loaded(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> ServerConfig:
    """Run `prebuildd server ARGS` up to its config: the server itself does not start."""
    seen: list[ServerConfig] = []

    class _Stop(Exception):
        pass

    def capture(log_format: str, level: str, **options: object) -> None:
        raise _Stop

    real_load = server_command.load_config

    def load(values: dict[str, object], config_file: Path | None = None) -> ServerConfig:
        config = real_load(values, config_file)
        seen.append(config)
        return config

    monkeypatch.setattr(server_command, "load_config", load)
    monkeypatch.setattr(server_command, "configure_logging", capture)
    result = CliRunner().invoke(app, ["server", *args])
    assert isinstance(result.exception, _Stop), result.output
    return seen[0]


def test_every_field_has_help_text() -> None:
    missing = [
        name for name, info in ServerConfig.model_fields.items() if not (info.description or "").strip()
    ]
    assert missing == []


def test_defaults_follow_the_spec() -> None:
    config = ServerConfig()
    assert config.postgres_url is None
    assert config.http_address == "127.0.0.1:7080"
    assert config.provisioner_daemons == 3
    assert config.provisioner_tags == {}
    assert (config.reconcile_interval, config.backoff_interval) == (60.0, 60.0)
    assert (config.backoff_lookback, config.max_backoff) == (3600.0, 3600.0)
    assert (config.claim_timeout, config.stale_job_timeout) == (10.0, 300.0)
    assert config.event_retention == 7 * 86400.0
    assert (config.failure_hard_limit, config.max_inflight_prebuild_jobs) == (3, 20)
    assert config.reconcile_concurrency == 0
    assert (config.log_format, config.log_level, config.demo) == ("console", "info", False)


def test_every_option_is_in_server_help_with_its_variable_and_help() -> None:
    text = _help()
    for option in config_options():
        assert f"--{option.flag} " in text, option.flag
        assert option.env in text, option.env
        # The first words of the description: the help is this option's, not a placeholder.
        assert " ".join(option.help.split()[:3]) in text, option.flag
    assert "--demo" in text


def test_env_names_follow_the_flag_names() -> None:
    for option in config_options():
        assert option.env == "PREBUILDD_" + option.flag.replace("-", "_").upper()


def test_flags_beat_variables_beat_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREBUILDD_RECONCILE_INTERVAL", "5m")
    monkeypatch.setenv("PREBUILDD_CLAIM_TIMEOUT", "2s")
    config = _loaded(monkeypatch, ["--reconcile-interval", "500ms", "--data-dir", "/tmp/pbd"])
    assert config.reconcile_interval == 0.5  # flag over variable
    assert config.claim_timeout == 2.0  # variable over default
    assert config.backoff_lookback == 3600.0  # default
    assert config.data_dir == Path("/tmp/pbd")


def test_provisioner_tags_from_flags_the_variable_and_the_old_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREBUILDD_PROVISIONER_TAGS", "region=eu,gpu=none")
    assert ServerConfig().provisioner_tags == {"region": "eu", "gpu": "none"}
    monkeypatch.setenv("PREBUILDD_PROVISIONER_TAG", "region=us")
    assert ServerConfig().provisioner_tags == {"region": "us"}
    config = _loaded(monkeypatch, ["--provisioner-tag", "a=1", "--provisioner-tag", "b=2"])
    assert config.provisioner_tags == {"a": "1", "b": "2"}


def test_demo_flag_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _loaded(monkeypatch, ["--demo"]).demo is True
    monkeypatch.setenv("PREBUILDD_DEMO", "true")
    assert _loaded(monkeypatch, []).demo is True


def test_code_builds_configs_with_numbers_of_seconds() -> None:
    config = ServerConfig(heartbeat_interval=0.2, job_poll_interval=0.5, reconcile_interval=3600)
    assert (config.heartbeat_interval, config.job_poll_interval, config.reconcile_interval) == (
        0.2,
        0.5,
        3600.0,
    )


def test_a_bad_duration_flag_names_the_option() -> None:
    result = CliRunner().invoke(app, ["server", "--reconcile-interval", "soon"])
    assert result.exit_code == 2
    assert "Invalid value for '--reconcile-interval'" in result.output
    assert "invalid duration 'soon'" in result.output


def test_a_bad_variable_names_the_variable_and_its_flag() -> None:
    result = CliRunner().invoke(app, ["server"], env={"PREBUILDD_HEARTBEAT_INTERVAL": "1y"})
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())
    assert "PREBUILDD_HEARTBEAT_INTERVAL (--heartbeat-interval)" in text
    assert "invalid duration '1y'" in text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--http-address", "7080"], "expected HOST:PORT"),
        (["--log-format", "xml"], "expected console or json"),
        (["--log-level", "loud"], "unknown log level 'loud'"),
        (["--provisioner-tag", "gpu"], "expected KEY=VALUE"),
        (["--provisioner-daemons", "-1"], "must be 0 or more"),
        (["--max-inflight-prebuild-jobs", "0"], "must be at least 1"),
        (["--db-pool-size", "many"], "valid integer"),
        (["--heartbeat-interval", "5m"], "--stale-job-timeout must be at least three"),
    ],
)
def test_bad_values_are_usage_errors(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(app, ["server", *args])
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())
    assert expected in text
    assert args[0] in text


def test_readme_lists_every_option_with_its_variable() -> None:
    table = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `--([a-z-]+)` \| `(PREBUILDD_[A-Z_]+)`", table, re.M)
    }
    assert rows == {o.flag: o.env for o in config_options()}
