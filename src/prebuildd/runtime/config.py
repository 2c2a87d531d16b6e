"""Server configuration: every option has a flag and a `PREBUILDD_*` variable; defaults follow SPEC §10."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/prebuildd` (or `~/.local/share/prebuildd`); `/var/lib/prebuildd` as root."""
    if os.geteuid() == 0:
        return Path("/var/lib/prebuildd")
    xdg = os.environ.get("XDG_DATA_HOME")
    return Path(xdg) / "prebuildd" if xdg else Path.home() / ".local" / "share" / "prebuildd"


@dataclass
class ServerConfig:
    postgres_url: str | None = None
    """None: run the embedded PostgreSQL in ``data_dir``."""
    data_dir: Path = field(default_factory=default_data_dir)
    http_address: str = "127.0.0.1:7080"
    access_url: str = ""
    """How workspaces and agents reach the server; defaults to http://<http_address>."""
    provisioner_daemons: int = 3
    provisioner_tags: dict[str, str] = field(default_factory=dict)
    log_format: str = "console"
    log_level: str = "info"
    demo: bool = False

    # durations in seconds
    reconcile_interval: float = 60.0
    backoff_interval: float = 60.0
    backoff_lookback: float = 3600.0
    max_backoff: float = 3600.0
    claim_timeout: float = 10.0
    stale_job_timeout: float = 300.0
    heartbeat_interval: float = 10.0
    job_poll_interval: float = 2.0
    shutdown_grace: float = 30.0
    event_retention: float = 7 * 86400.0

    failure_hard_limit: int = 3
    max_inflight_prebuild_jobs: int = 20
    reconcile_concurrency: int = 0
    """0: min(5, pool size / 2)."""
    notify_webhook: str | None = None
    db_pool_size: int = 20

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

    def validate(self) -> None:
        """Raise ValueError naming the option when a value cannot work."""
        if ":" not in self.http_address:
            raise ValueError(f"--http-address {self.http_address!r}: expected HOST:PORT, e.g. 127.0.0.1:7080")
        try:
            port = self.port
        except ValueError:
            raise ValueError(f"--http-address {self.http_address!r}: the port must be a number") from None
        if not 0 <= port <= 65535:
            raise ValueError(f"--http-address {self.http_address!r}: the port must be between 0 and 65535")
        if self.provisioner_daemons < 0:
            raise ValueError("--provisioner-daemons must be 0 or more")
        if self.log_format not in ("console", "json"):
            raise ValueError(f"--log-format {self.log_format!r}: expected console or json")
        if self.failure_hard_limit < 0:
            raise ValueError("--failure-hard-limit must be 0 (disabled) or more")
        if self.max_inflight_prebuild_jobs < 1:
            raise ValueError("--max-inflight-prebuild-jobs must be at least 1")
        for name in ("reconcile_interval", "backoff_interval", "stale_job_timeout", "heartbeat_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be more than zero")
        if self.heartbeat_interval * 3 > self.stale_job_timeout:
            raise ValueError("--stale-job-timeout must be at least three heartbeat intervals")
