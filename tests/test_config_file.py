"""The config file (`--config`, TOML): precedence flags > environment > file > defaults, errors that name the key
and the file, the default /etc/prebuildd/config.toml, and `--print-config` with every secret redacted."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prebuildd.cli import app, server_command
from prebuildd.runtime.config import REDACTED, ServerConfig, config_options, load_server_config


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PREBUILDD_* variable of this machine, and no /etc/prebuildd/config.toml, leaks into these configs."""
    for name in list(os.environ):
        if name.startswith("PREBUILDD_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(server_command, "DEFAULT_CONFIG_FILE", tmp_path / "absent" / "config.toml")


def _write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _printed(*args: str, env: dict[str, str] | None = None) -> tuple[str, dict[str, object]]:
    """`prebuildd server --print-config ARGS`: its text and the TOML it is."""
    result = CliRunner().invoke(app, ["server", "--print-config", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output, tomllib.loads(result.output)


def _error(*args: str, env: dict[str, str] | None = None) -> str:
    """The usage error of `prebuildd server --print-config ARGS` (the same loading as a start, but a value
    wrongly accepted prints instead of starting a server)."""
    result = CliRunner().invoke(
        app, ["server", "--print-config", *args], env={"COLUMNS": "400", **(env or {})}
    )
    assert result.exit_code == 2, result.output
    return " ".join(result.output.replace("│", " ").split())


def test_flags_beat_variables_beat_the_file_beats_defaults(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
reconcile_interval = "5m"
claim_timeout = "3s"
db_pool_size = 7
demo = true
[provisioner_tags]
region = "eu"
""",
    )
    env = {"PREBUILDD_CLAIM_TIMEOUT": "2s", "PREBUILDD_DB_POOL_SIZE": "9"}
    _, printed = _printed("--config", str(path), "--db-pool-size", "11", env=env)
    assert printed["db_pool_size"] == 11  # flag over variable over file
    assert printed["claim_timeout"] == "2s"  # variable over file
    assert printed["reconcile_interval"] == "5m"  # file over default
    assert printed["demo"] is True and printed["provisioner_tags"] == {"region": "eu"}
    assert printed["backoff_lookback"] == "1h"  # default

    # The same precedence without the CLI, and the file read through the environment's PREBUILDD_CONFIG.
    os.environ.update(env)
    try:
        config = load_server_config({"db_pool_size": 11}, path)
    finally:
        for name in env:
            del os.environ[name]
    assert (config.db_pool_size, config.claim_timeout, config.reconcile_interval) == (11, 2.0, 300.0)
    _, printed = _printed(env={"PREBUILDD_CONFIG": str(path)})
    assert printed["db_pool_size"] == 7


def test_tags_from_a_flag_or_a_variable_replace_the_files_not_merge(tmp_path: Path) -> None:
    path = _write(tmp_path, '[provisioner_tags]\nregion = "eu"\ngpu = "none"\n')
    assert _printed("--config", str(path))[1]["provisioner_tags"] == {"region": "eu", "gpu": "none"}
    flagged = _printed("--config", str(path), "--provisioner-tag", "region=us")[1]
    assert flagged["provisioner_tags"] == {"region": "us"}
    from_env = _printed("--config", str(path), env={"PREBUILDD_PROVISIONER_TAG": "zone=b"})[1]
    assert from_env["provisioner_tags"] == {"zone": "b"}


def test_print_config_names_where_each_value_came_from(tmp_path: Path) -> None:
    path = _write(tmp_path, 'claim_timeout = "3s"\nreconcile_interval = "5m"\n')
    text, _ = _printed(
        "--config", str(path), "--reconcile-interval", "1s", env={"PREBUILDD_DB_POOL_SIZE": "9"}
    )
    lines = {line.split(" =")[0]: line for line in text.splitlines() if " = " in line}
    assert lines["reconcile_interval"].endswith("# --reconcile-interval")
    assert lines["db_pool_size"].endswith("# PREBUILDD_DB_POOL_SIZE")
    assert lines["claim_timeout"].endswith(f"# {path}")
    assert lines["max_backoff"].endswith("# default")


def test_a_code_built_config_reads_no_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "db_pool_size = 7\n")
    assert load_server_config({}, path).db_pool_size == 7
    assert ServerConfig().db_pool_size == 20


def test_the_default_file_is_read_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = _write(tmp_path, "db_pool_size = 5\n", "default.toml")
    monkeypatch.setattr(server_command, "DEFAULT_CONFIG_FILE", default)
    text, printed = _printed()
    assert printed["db_pool_size"] == 5
    assert f"config file: {default}" in text
    other = _write(tmp_path, "db_pool_size = 6\n", "other.toml")
    assert _printed("--config", str(other))[1]["db_pool_size"] == 6  # --config replaces it, not merged


def test_an_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "db_pool = 3\n")
    text = _error("--config", str(path))
    assert f"Invalid value for 'db_pool' in {path}" in text
    assert "did you mean db_pool_size?" in text


def test_a_section_is_an_unknown_key(tmp_path: Path) -> None:
    path = _write(tmp_path, '[server]\nhttp_address = "0.0.0.0:7080"\n')
    assert f"Invalid value for 'server' in {path}: not an option" in _error("--config", str(path))


@pytest.mark.parametrize(
    ("line", "key", "reason"),
    [
        ('db_pool_size = "many"', "db_pool_size", "valid integer"),
        ("reconcile_interval = true", "reconcile_interval", "expected a duration"),
        ('reconcile_interval = "soon"', "reconcile_interval", "invalid duration 'soon'"),
        ("http_address = 7080", "http_address", "valid string"),
        ('provisioner_tags = "gpu"', "provisioner_tags", "expected KEY=VALUE"),
        ('log_format = "xml"', "log_format", "expected console or json"),
    ],
)
def test_a_wrong_type_names_the_key_and_the_file(tmp_path: Path, line: str, key: str, reason: str) -> None:
    path = _write(tmp_path, line + "\n")
    text = _error("--config", str(path))
    assert f"Invalid value for '{key}' in {path}" in text
    assert reason in text


def test_a_bad_value_overridden_by_a_flag_is_no_error(tmp_path: Path) -> None:
    path = _write(tmp_path, 'db_pool_size = "many"\n')
    assert _printed("--config", str(path), "--db-pool-size", "4")[1]["db_pool_size"] == 4


def test_a_file_that_is_not_toml_or_missing_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "db_pool_size = = 3\n")
    text = _error("--config", str(path))
    assert f"config file {path} is not valid TOML" in text
    missing = tmp_path / "missing.toml"
    assert f"config file {missing} does not exist" in _error("--config", str(missing))


SECRETS = {
    # field: (a value holding secrets, the secrets, what must still show)
    "postgres_url": (
        "postgresql://prebuildd:pg-s3cret@db.internal:5432/prebuildd?sslmode=require&password=pg-query-s3cret",
        ["pg-s3cret", "pg-query-s3cret"],
        ["postgresql://prebuildd:", "@db.internal:5432/prebuildd?sslmode=require"],
    ),
    "notify_webhook": (
        "https://hook-user:hook-s3cret@hooks.example.com/services/T0/B0/hook-path-s3cret?token=hook-q-s3cret",
        ["hook-user", "hook-s3cret", "hook-path-s3cret", "hook-q-s3cret"],
        ["https://", "hooks.example.com"],
    ),
    "metrics_token": ("metrics-s3cret-token", ["metrics-s3cret-token"], []),
}


def test_every_secret_field_is_covered_here() -> None:
    declared = {o.field for o in config_options() if o.secret}
    assert declared == set(SECRETS)
    # A new option whose name says it is secret must be declared so (then it is redacted, and listed above).
    for option in config_options():
        if any(
            word in option.field for word in ("token", "password", "secret", "key", "webhook", "postgres")
        ):
            assert option.secret, f"{option.field} looks secret: declare it with secret=..."


@pytest.mark.parametrize("source", ["flag", "env", "file"])
def test_print_config_redacts_every_secret(tmp_path: Path, source: str) -> None:
    options = {o.field: o for o in config_options()}
    args: list[str] = []
    env: dict[str, str] = {}
    lines = []
    for field, (value, _, _) in SECRETS.items():
        if source == "flag":
            args += [f"--{options[field].flag}", value]
        elif source == "env":
            env[options[field].env] = value
        else:
            lines.append(f"{field} = {value!r}")
    if lines:
        args += ["--config", str(_write(tmp_path, "\n".join(lines) + "\n"))]
    text, printed = _printed(*args, env=env)
    for field, (_, secrets, shown) in SECRETS.items():
        for secret in secrets:
            assert secret not in text, (field, secret)
        assert REDACTED in str(printed[field])
        for part in shown:
            assert part in str(printed[field]), (field, part)


def test_a_libpq_keyword_string_is_redacted_too() -> None:
    text, printed = _printed("--postgres-url", "host=db user=pb password='a s3cret' dbname=pb")
    assert "s3cret" not in text
    assert printed["postgres_url"] == f"host=db user=pb password={REDACTED} dbname=pb"


def test_print_config_output_is_a_config_file_that_loads_the_same(tmp_path: Path) -> None:
    text, _ = _printed("--reconcile-interval", "90s", "--provisioner-tag", "a=1", "--data-dir", str(tmp_path))
    path = _write(tmp_path, text, "printed.toml")
    again, _ = _printed("--config", str(path))
    strip = lambda t: [line.split("  #")[0] for line in t.splitlines() if not line.startswith("#")]  # noqa: E731
    assert strip(again) == strip(text)
