"""`prebuildd server`: flags (each also a `PREBUILDD_*` variable) into a ServerConfig, logging, run."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import typer

from prebuildd.cli.flags import configure_logging, parse_duration_flag, parse_tags
from prebuildd.runtime.config import ServerConfig, default_data_dir

# Shared with `provisioner start`; the old names stay for this module's flags.
_duration = parse_duration_flag
_tags = parse_tags


def Env(name: str) -> str:
    return f"PREBUILDD_{name}"


def register(app: typer.Typer) -> None:
    @app.command("server")
    def server(
        postgres_url: Annotated[
            str | None,
            typer.Option(
                envvar=Env("POSTGRES_URL"),
                help="PostgreSQL URL; absent: run the embedded PostgreSQL in --data-dir.",
            ),
        ] = None,
        data_dir: Annotated[
            Path | None,
            typer.Option(
                envvar=Env("DATA_DIR"),
                help="Where the embedded PostgreSQL, the owner token and job files live.",
            ),
        ] = None,
        http_address: Annotated[
            str, typer.Option(envvar=Env("HTTP_ADDRESS"), help="HOST:PORT of the HTTP API.")
        ] = "127.0.0.1:7080",
        access_url: Annotated[
            str, typer.Option(envvar=Env("ACCESS_URL"), help="How workspaces and agents reach this server.")
        ] = "",
        provisioner_daemons: Annotated[
            int,
            typer.Option(
                envvar=Env("PROVISIONER_DAEMONS"),
                help="Embedded provisioner daemons (0: only standalone ones).",
            ),
        ] = 3,
        provisioner_tag: Annotated[
            list[str],
            typer.Option(
                "--provisioner-tag",
                envvar=Env("PROVISIONER_TAGS"),
                help="KEY=VALUE tag offered by the embedded daemons.",
            ),
        ] = [],  # noqa: B006
        log_format: Annotated[
            str, typer.Option(envvar=Env("LOG_FORMAT"), help="console or json.")
        ] = "console",
        log_level: Annotated[str, typer.Option(envvar=Env("LOG_LEVEL"))] = "info",
        demo: Annotated[
            bool, typer.Option("--demo", envvar=Env("DEMO"), help="Push the example template on start.")
        ] = False,
        reconcile_interval: Annotated[str, typer.Option(envvar=Env("RECONCILE_INTERVAL"))] = "60s",
        backoff_interval: Annotated[str, typer.Option(envvar=Env("BACKOFF_INTERVAL"))] = "60s",
        backoff_lookback: Annotated[str, typer.Option(envvar=Env("BACKOFF_LOOKBACK"))] = "1h",
        max_backoff: Annotated[str, typer.Option(envvar=Env("MAX_BACKOFF"))] = "1h",
        claim_timeout: Annotated[str, typer.Option(envvar=Env("CLAIM_TIMEOUT"))] = "10s",
        stale_job_timeout: Annotated[str, typer.Option(envvar=Env("STALE_JOB_TIMEOUT"))] = "5m",
        heartbeat_interval: Annotated[str, typer.Option(envvar=Env("HEARTBEAT_INTERVAL"))] = "10s",
        job_poll_interval: Annotated[str, typer.Option(envvar=Env("JOB_POLL_INTERVAL"))] = "2s",
        shutdown_grace: Annotated[
            str,
            typer.Option(
                envvar=Env("SHUTDOWN_GRACE"), help="How long running jobs get to finish on shutdown."
            ),
        ] = "30s",
        event_retention: Annotated[str, typer.Option(envvar=Env("EVENT_RETENTION"))] = "7d",
        failure_hard_limit: Annotated[
            int, typer.Option(envvar=Env("FAILURE_HARD_LIMIT"), help="0 disables.")
        ] = 3,
        max_inflight_prebuild_jobs: Annotated[
            int, typer.Option(envvar=Env("MAX_INFLIGHT_PREBUILD_JOBS"))
        ] = 20,
        reconcile_concurrency: Annotated[
            int, typer.Option(envvar=Env("RECONCILE_CONCURRENCY"), help="0: min(5, pool size / 2).")
        ] = 0,
        notify_webhook: Annotated[
            str | None,
            typer.Option(envvar=Env("NOTIFY_WEBHOOK"), help="POSTed to when presets become hard-limited."),
        ] = None,
        db_pool_size: Annotated[int, typer.Option(envvar=Env("DB_POOL_SIZE"))] = 20,
    ) -> None:
        """Run the server: HTTP API, embedded provisioner daemons and the reconciler."""
        config = ServerConfig(
            postgres_url=postgres_url,
            data_dir=data_dir or default_data_dir(),
            http_address=http_address,
            access_url=access_url,
            provisioner_daemons=provisioner_daemons,
            provisioner_tags=_tags(provisioner_tag),
            log_format=log_format,
            log_level=log_level,
            demo=demo,
            reconcile_interval=_duration(reconcile_interval),
            backoff_interval=_duration(backoff_interval),
            backoff_lookback=_duration(backoff_lookback),
            max_backoff=_duration(max_backoff),
            claim_timeout=_duration(claim_timeout),
            stale_job_timeout=_duration(stale_job_timeout),
            heartbeat_interval=_duration(heartbeat_interval),
            job_poll_interval=_duration(job_poll_interval),
            shutdown_grace=_duration(shutdown_grace),
            event_retention=_duration(event_retention),
            failure_hard_limit=failure_hard_limit,
            max_inflight_prebuild_jobs=max_inflight_prebuild_jobs,
            reconcile_concurrency=reconcile_concurrency,
            notify_webhook=notify_webhook,
            db_pool_size=db_pool_size,
        )
        try:
            config.validate()
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        configure_logging(config.log_format, config.log_level)
        from prebuildd.server.process import Server

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(Server(config).run())
