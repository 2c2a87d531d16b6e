"""Server configuration, declared once: each field is a `prebuildd server` flag and a `PREBUILDD_*` variable.

`ServerConfig` is a pydantic-settings model: its field declarations carry the help text, the defaults (SPEC §10)
and the parsing (durations such as ``500ms``/``30s``/``5m``, ``KEY=VALUE`` tags). The CLI builds its flags from
`config_options()`, so an option exists in one place. The naming rule: ``--some-option`` ↔
``PREBUILDD_SOME_OPTION`` ↔ ``some_option`` in the TOML config file; values come from flags, then the
environment, then the config file (`load_server_config`), then these defaults. Fields declared ``secret`` are
redacted wherever the effective configuration is shown (`redacted`).
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from prebuildd.domain.durations import format_duration, parse_duration
from prebuildd.domain.redaction import REDACTED, redact_url
from prebuildd.runtime.identities import REPLICA_ID_PATTERN

ENV_PREFIX = "PREBUILDD_"
DEFAULT_CONFIG_FILE = Path("/etc/prebuildd/config.toml")
"""Read by `prebuildd server` when it exists and neither ``--config`` nor ``PREBUILDD_CONFIG`` names a file."""
CONFIG_FILE_ENV = "PREBUILDD_CONFIG"

SecretKind = Literal["url", "text"]
"""How a secret field is redacted: a URL keeps its scheme, host, port and database (credentials, path and query
values hidden), text is hidden whole."""

_config_file: ContextVar[Path | None] = ContextVar("prebuildd_config_file", default=None)


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/prebuildd` (or `~/.local/share/prebuildd`); `/var/lib/prebuildd` as root."""
    if os.geteuid() == 0:
        return Path("/var/lib/prebuildd")
    xdg = os.environ.get("XDG_DATA_HOME")
    return Path(xdg) / "prebuildd" if xdg else Path.home() / ".local" / "share" / "prebuildd"


def _seconds(value: object) -> object:
    # Numbers pass as seconds (tests and benches build configs in code); text is a human duration. A boolean
    # (a config file's `= true`) is no duration, although Python counts it as a number.
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()}: expected a duration such as 30s or 5m")
    return parse_duration(value) if isinstance(value, str) else value


def parse_tags(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``KEY=VALUE`` items to a dict; a ValueError names the item that is not one."""
    tags: dict[str, str] = {}
    for item in items:
        key, sep, tag = str(item).partition("=")
        if not sep or not key:
            raise ValueError(f"tag {item!r}: expected KEY=VALUE")
        tags[key] = tag
    return tags


def _tags(value: object) -> object:
    # Repeated flags give a list; one variable holds the items separated by spaces or commas.
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    return parse_tags(value) if isinstance(value, list | tuple) else value


_DURATION = BeforeValidator(_seconds)
Duration = Annotated[float, _DURATION]
"""Seconds; given as ``500ms``, ``30s``, ``5m``, ``1h30m``, ``7d`` or a bare number of seconds."""
Tags = Annotated[dict[str, str], NoDecode, BeforeValidator(_tags)]


def _option(
    default: Any = None,
    help: str = "",
    *,
    default_factory: Any = None,
    shown: str | None = None,
    flag: str | None = None,
    env_aliases: tuple[str, ...] = (),
    secret: SecretKind | None = None,
) -> Any:
    """A field with its help text; ``shown`` is the default as `--help` prints it, ``flag`` a flag name that
    is not the field name (its variable follows the flag), ``env_aliases`` older variable names still read,
    ``secret`` how the value is redacted when the configuration is shown."""
    extra: dict[str, Any] = {}
    if shown is not None:
        extra["shown"] = shown
    if secret is not None:
        extra["secret"] = secret
    alias = None
    if flag is not None:
        # With an alias pydantic-settings reads exactly these variables (no prefix added), so list them all.
        extra["flag"] = flag
        alias = AliasChoices(ENV_PREFIX + flag.replace("-", "_").upper(), *env_aliases)
    elif env_aliases:
        raise TypeError("env_aliases need the flag they are aliases of")
    if default_factory is not None:
        return Field(
            default_factory=default_factory, description=help, validation_alias=alias, json_schema_extra=extra
        )
    return Field(default, description=help, validation_alias=alias, json_schema_extra=extra)


class _FileSource(TomlConfigSettingsSource):
    """The config file as a settings source, without the keys a flag gives: pydantic-settings merges tables
    across sources, and a flag's tags must replace the file's, not add to them."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path, *, shadowed: set[str]) -> None:
        super().__init__(settings_cls, toml_file=path)
        self._shadowed = shadowed

    def __call__(self) -> dict[str, Any]:
        return {key: value for key, value in super().__call__().items() if key not in self._shadowed}


class ServerConfig(BaseSettings):
    """Everything `prebuildd server` can be told; the fields' descriptions are the `--help` text."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="forbid",
        populate_by_name=True,  # code passes provisioner_tags=... by field name; variables use the alias
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags (init arguments) > environment > config file > defaults. A config built in code reads no file.
        path = _config_file.get()
        if path is None:
            return (init_settings, env_settings)
        given = set(getattr(init_settings, "init_kwargs", {}))
        return (init_settings, env_settings, _FileSource(settings_cls, path, shadowed=given))

    postgres_url: str | None = _option(
        None,
        "PostgreSQL URL to use; several servers on one database are replicas. Absent: run the embedded "
        "PostgreSQL in --data-dir.",
        shown="embedded",
        secret="url",
    )
    data_dir: Path = _option(
        default_factory=default_data_dir,
        help="Where the embedded PostgreSQL, the owner token and job working directories live.",
        shown="$XDG_DATA_HOME/prebuildd, or /var/lib/prebuildd as root",
    )
    http_address: str = _option("127.0.0.1:7080", "HOST:PORT the HTTP API listens on.")
    access_url: str = _option(
        "", "How workspaces and agents reach this server.", shown="http://<http-address>"
    )
    provisioner_daemons: int = _option(3, "Embedded provisioner daemons (0: only standalone ones).")
    workers: int = _option(
        1,
        "HTTP API processes serving the one --http-address. 1: the API runs in the server's process. More: the "
        "server's process keeps the database, the reconciler and the embedded daemons, and supervises this "
        "many API worker processes (claims then use every core).",
    )
    replica_id: str | None = _option(
        None,
        "This server's id, stable across its restarts: its embedded daemons are <replica-id>/embedded-<i>, and "
        "a restarted server fails the jobs its previous run held at once. Give each replica its own.",
        shown="read from, or created once in, <data-dir>/replica-id",
    )
    provisioner_tags: Tags = _option(
        default_factory=dict,
        help="KEY=VALUE tag offered by the embedded daemons; repeat the flag for more tags (the variable takes "
        "them separated by spaces or commas).",
        shown="none",
        flag="provisioner-tag",
        env_aliases=("PREBUILDD_PROVISIONER_TAGS",),
    )
    log_format: str = _option("console", "Log format: console, or json for log shippers.")
    log_level: str = _option("info", "Log level: debug, info, warning or error.")
    access_log: bool = _option(
        False, "Log every HTTP request: one http.request line with method, path and status."
    )
    demo: bool = _option(False, "Push the example template on start.")
    migrate: bool = _option(
        True,
        "Apply pending schema migrations at start. --no-migrate: refuse to start on an older schema instead "
        "(upgrades run `prebuildd db migrate` on purpose).",
    )

    reconcile_interval: Duration = _option(
        60.0,
        "The reconcile ticker; claims, job completions, new versions and pool changes kick a cycle at once.",
    )
    reconcile_lease: Duration = _option(
        15.0,
        "The reconcile cycle lease: a replica that freezes or is cut off mid-cycle stops reconciliation for at "
        "most 4/3 of it (docs/reconciler.md).",
    )
    backoff_interval: Duration = _option(
        60.0, "Backoff after a failed prebuild creation, per consecutive failure."
    )
    backoff_lookback: Duration = _option(3600.0, "How far back failed creations count towards the backoff.")
    max_backoff: Duration = _option(3600.0, "The longest backoff between failed creations.")
    claim_timeout: Duration = _option(10.0, "A claim slower than this falls back to a cold build.")
    stale_job_timeout: Duration = _option(
        300.0, "A running job without a heartbeat for this long is failed (at least three heartbeats)."
    )
    heartbeat_interval: Duration = _option(
        10.0, "How often a provisioner daemon reports a running job alive."
    )
    job_poll_interval: Duration = _option(
        2.0,
        "How often the server looks for pending jobs (one query, whatever the number of idle daemons) when no "
        "notification wakes them.",
    )
    shutdown_grace: Duration = _option(30.0, "How long running jobs get to finish on shutdown.")
    event_retention: Duration = _option(7 * 86400.0, "How long prebuild events are kept before pruning.")
    pool_history_retention: Duration = _option(
        7 * 86400.0,
        "How long pool-size samples (the dashboard's pool history) are kept; the reconciler prunes older ones.",
    )
    dashboard_session_ttl: Duration = _option(
        12 * 3600.0,
        "How long a dashboard sign-in lasts (the session also ends when its API token is revoked or expires).",
    )
    audit_retention: Duration = _option(
        365 * 86400.0, "How long audit log entries are kept; the server prunes older ones (e.g. 365d, 90d)."
    )

    failure_hard_limit: int = _option(3, "Consecutive failed creations that suspend a pool (0 disables).")
    max_inflight_prebuild_jobs: int = _option(20, "Global pacing: prebuild jobs queued or running at once.")
    reconcile_concurrency: int = _option(0, "Presets reconciled in parallel (0: min(5, --db-pool-size / 2)).")
    notify_webhook: str | None = _option(
        None,
        "URL POSTed to once per cycle with presets that became hard-limited.",
        shown="none",
        secret="url",
    )
    metrics_token: str | None = _option(
        None,
        "A bearer token that may read /metrics (for Prometheus), besides a site owner's API token.",
        shown="none",
        secret="text",
    )
    metrics_public: bool = _option(
        False, "Serve /metrics without a token (only where the listen address is not reachable by users)."
    )
    db_pool_size: int = _option(20, "Connections in the PostgreSQL pool.")
    db_timeout: Duration = _option(
        2.0,
        "How long a request waits for a database connection before it fails with 503 database_unavailable "
        "(also the connect timeout).",
    )
    database_wait: Duration = _option(
        10.0,
        "At startup, how long to retry a PostgreSQL that cannot be reached before exiting with an error.",
    )

    @field_validator("http_address")
    @classmethod
    def _check_http_address(cls, value: str) -> str:
        if ":" not in value:
            raise ValueError(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:7080")
        port = value.rsplit(":", 1)[1]
        if not port.isdigit():
            raise ValueError(f"{value!r}: the port must be a number")
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r}: the port must be between 0 and 65535")
        return value

    @field_validator("replica_id")
    @classmethod
    def _check_replica_id(cls, value: str | None) -> str | None:
        if value is not None and not re.match(REPLICA_ID_PATTERN, value):
            raise ValueError(f"{value!r}: letters, digits, '.', '_' and '-' (at most 63), starting with one")
        return value

    @field_validator("log_format")
    @classmethod
    def _check_log_format(cls, value: str) -> str:
        if value not in ("console", "json"):
            raise ValueError(f"{value!r}: expected console or json")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if not isinstance(logging.getLevelName(value.upper()), int):
            raise ValueError(f"unknown log level {value!r}: use debug, info, warning or error")
        return value

    @field_validator("provisioner_daemons", "failure_hard_limit")
    @classmethod
    def _check_not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 or more")
        return value

    @field_validator("max_inflight_prebuild_jobs", "workers")
    @classmethod
    def _check_positive_count(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator(
        "reconcile_interval",
        "reconcile_lease",
        "backoff_interval",
        "stale_job_timeout",
        "heartbeat_interval",
        "db_timeout",
    )
    @classmethod
    def _check_positive_duration(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be more than zero")
        return value

    @model_validator(mode="after")
    def _check_heartbeats_fit(self) -> ServerConfig:
        if self.heartbeat_interval * 3 > self.stale_job_timeout:
            raise ValueError("--stale-job-timeout must be at least three --heartbeat-interval")
        return self

    @property
    def host(self) -> str:
        return self.http_address.rsplit(":", 1)[0] or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.http_address.rsplit(":", 1)[1])

    @property
    def effective_access_url(self) -> str:
        if self.access_url:
            return self.access_url.rstrip("/")
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class ConfigOption:
    """One ServerConfig field as the CLI and the README show it."""

    field: str
    flag: str
    """Without the leading dashes."""
    env: str
    env_aliases: tuple[str, ...]
    help: str
    default: str
    """The default as text: a duration as ``1m``, a factory or an empty value as its field says."""
    kind: str
    """duration, integer, boolean, path, tags or text: how the value is written."""
    secret: SecretKind | None = None
    """Set for a value that is redacted when the configuration is shown."""

    @property
    def key(self) -> str:
        """The option's key in the config file."""
        return self.field


def _kind(info: FieldInfo) -> str:
    if _DURATION in info.metadata:
        return "duration"
    annotation = info.annotation
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is Path:
        return "path"
    if annotation == dict[str, str]:
        return "tags"
    return "text"


def _default_text(info: FieldInfo, kind: str, extra: dict[str, Any]) -> str:
    if "shown" in extra:
        return str(extra["shown"])
    default = info.get_default(call_default_factory=True)
    if kind == "duration":
        return format_duration(float(default))
    if kind == "boolean":
        return "true" if default else "false"
    return str(default)


def config_options() -> list[ConfigOption]:
    """Every ServerConfig field, in declaration order, with its flag, variables, help and default."""
    options = []
    for name, info in ServerConfig.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        flag = str(extra.get("flag") or name.replace("_", "-"))
        env = ENV_PREFIX + flag.replace("-", "_").upper()
        aliases: tuple[str, ...] = ()
        if isinstance(info.validation_alias, AliasChoices):
            aliases = tuple(str(a) for a in info.validation_alias.choices if a != env)
        kind = _kind(info)
        options.append(
            ConfigOption(
                field=name,
                flag=flag,
                env=env,
                env_aliases=aliases,
                help=info.description or "",
                default=_default_text(info, kind, extra),
                kind=kind,
                secret="url" if extra.get("secret") == "url" else "text" if extra.get("secret") else None,
            )
        )
    return options


# -- the config file -------------------------------------------------------------------------------------------


class ConfigFileError(ValueError):
    """The config file cannot be used; the message names the file (and the key)."""


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's top-level keys; a missing file or bad TOML is a ConfigFileError naming the file."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigFileError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigFileError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"config file {path} is not valid TOML: {exc}") from None


@contextmanager
def _reading(path: Path | None) -> Iterator[None]:
    token = _config_file.set(path)
    try:
        yield
    finally:
        _config_file.reset(token)


def load_server_config(flags: Mapping[str, Any], config_file: Path | None = None) -> ServerConfig:
    """The ServerConfig from ``flags`` over the environment over ``config_file`` over the defaults (raises
    pydantic's ValidationError; :func:`read_config_file` first gives a clear error for a file that cannot
    be read)."""
    with _reading(config_file):
        return ServerConfig(**flags)


# -- showing the effective configuration -----------------------------------------------------------------------


def redacted(option: ConfigOption, value: Any) -> Any:
    """``value`` of ``option`` as it may be shown: a secret field's secrets replaced by ``REDACTED``."""
    if option.secret is None or value is None or value == "":
        return value
    if option.secret == "url":
        # A database URL's path is the database name (useful, not secret); any other URL's path may be a key.
        return redact_url(str(value), keep_path=option.field == "postgres_url")
    return REDACTED


def _toml_value(option: ConfigOption, value: Any) -> str:
    if option.kind == "duration":
        return _toml_string(format_duration(float(value)))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict) and not value:
        return "{}"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_string(str(v))}" for k, v in value.items()) + " }"
    return _toml_string(str(value))


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04x}", escaped)
    return f'"{escaped}"'


def render_config(config: ServerConfig, sources: Mapping[str, str] | None = None) -> str:
    """The effective configuration as a TOML config file, secrets redacted; ``sources`` (field: where its
    value came from) become a comment on each line. An unset optional value is a commented-out line."""
    lines = []
    for option in config_options():
        value = redacted(option, getattr(config, option.field))
        where = f"  # {sources[option.field]}" if sources and option.field in sources else ""
        if value is None:
            lines.append(f"# {option.key} =   (not set: {option.default}){where}")
        else:
            lines.append(f"{option.key} = {_toml_value(option, value)}{where}")
    return "\n".join(lines) + "\n"
