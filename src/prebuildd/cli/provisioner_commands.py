"""`prebuildd provisioner …`: provisioner keys (owner) and standalone provisioner daemons.

`keys create|list|revoke` are clients of the HTTP API with the user's API token (`--url`/`--token`, or
`PREBUILDD_URL`/`PREBUILDD_TOKEN`). `start` runs one ``ProvisionerDaemon`` on this machine against the server's
daemon endpoints with a provisioner key: no database credentials. SIGINT/SIGTERM stop it gracefully (no new job,
the current one finishes); a second signal interrupts the current job, which is reported as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import structlog
import typer

from prebuildd.cli.flags import configure_logging, parse_duration_flag, parse_tags
from prebuildd.domain.jobs import FailureClass
from prebuildd.provisioner.daemon import DaemonOptions, ProvisionerDaemon
from prebuildd.provisioner.registry import available_provisioners
from prebuildd.queue.http import HttpJobQueue, StandaloneDaemonRefused
from prebuildd.queue.port import JobOutcome
from prebuildd.runtime.config import default_data_dir
from prebuildd.runtime.identities import IdentityInUse, hold_daemon_identity

log = structlog.get_logger(__name__)

provisioner_app = typer.Typer(
    name="provisioner", help="Provisioner keys and standalone provisioner daemons.", no_args_is_help=True
)
keys_app = typer.Typer(
    name="keys",
    help="Provisioner keys (owner): what standalone daemons authenticate with.",
    no_args_is_help=True,
)
provisioner_app.add_typer(keys_app)

UrlOption = Annotated[
    str | None, typer.Option("--url", envvar="PREBUILDD_URL", help="The server's URL, e.g. http://host:7080.")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", envvar="PREBUILDD_TOKEN", help="An API token (pbt_…) of an owner.")
]
TagOption = Annotated[list[str], typer.Option("--tag", help="KEY=VALUE; repeat for several tags.")]


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


# -- a minimal API client (until the shared one of the client commands exists) -----------------------------


def _api(
    method: str, path: str, url: str | None, token: str | None, *, body: Any = None, params: Any = None
) -> httpx.Response:
    if not url:
        _fail("which server? pass --url or set PREBUILDD_URL")
    if not token:
        _fail("no API token: pass --token or set PREBUILDD_TOKEN")
    headers = {"Authorization": f"Bearer {token}"}
    if organization := os.environ.get("PREBUILDD_ORG"):  # --org, lifted out of the command line by main()
        headers["Prebuildd-Organization"] = organization
    try:
        response = httpx.request(
            method,
            f"{url.rstrip('/')}/api/v1{path}",
            headers=headers,
            json=body,
            params=params,
            timeout=30.0,
        )
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {exc}")
    if response.status_code >= 400:
        try:
            message = str(response.json().get("message") or response.text)
        except ValueError:
            message = response.text.strip() or response.reason_phrase
        _fail(f"{message} (HTTP {response.status_code})")
    return response


def _format_tags(tags: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(tags.items())) or "-"


SiteWideOption = Annotated[
    bool,
    typer.Option(
        "--site-wide", help="A key of no organization, serving every organization (the site owner's)."
    ),
]


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Argument(help="A name for the key, e.g. the machine it is for.")],
    tag: TagOption = [],  # noqa: B006
    site_wide: SiteWideOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the key and its secret as JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create a provisioner key of the organization (--org); its secret is printed once (stdout), so store it
    now. Its daemons run that organization's jobs only (--site-wide: every organization's)."""
    body = {"name": name, "tags": parse_tags(tag), "site_wide": site_wide}
    created = _api("POST", "/provisioner-keys", url, token, body=body).json()
    if as_json:
        typer.echo(json.dumps(created, indent=2))
        return
    key = created["key"]
    typer.echo(
        f"Created provisioner key {key['name']} (tags: {_format_tags(key['tags'])}). The secret below is shown "
        f"only once; start a daemon with:\n  prebuildd provisioner start --url {url} --key <secret>",
        err=True,
    )
    typer.echo(created["secret"])


@keys_app.command("list")
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    site_wide: SiteWideOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the organization's provisioner keys, or the site-wide ones (never their secrets)."""
    params = {"include_revoked": include_revoked, "site_wide": site_wide}
    keys = _api("GET", "/provisioner-keys", url, token, params=params).json()
    if as_json:
        typer.echo(json.dumps(keys, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("NAME", "TAGS", "CREATED", "REVOKED", box=None)
    for key in keys:
        table.add_row(key["name"], _format_tags(key["tags"]), key["created_at"], key["revoked_at"] or "-")
    Console().print(table)


@keys_app.command("revoke")
def revoke_key(
    name: Annotated[str, typer.Argument(help="The key's name (or id).")],
    site_wide: SiteWideOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Revoke a provisioner key: daemons using it are refused from their next request and stop."""
    _api("DELETE", f"/provisioner-keys/{name}", url, token, params={"site_wide": site_wide})
    typer.echo(f"Revoked provisioner key {name}.", err=True)


# -- the standalone daemon -----------------------------------------------------------------------------------


async def run_standalone(
    url: str,
    key: str,
    *,
    tags: dict[str, str],
    name: str,
    work_dir: Path,
    identity: str = "",
    heartbeat_interval: float = 10.0,
    wait_seconds: float = 25.0,
) -> str | None:
    """Run a daemon until a signal stops it (→ None) or the server refuses it (→ the refusal message)."""
    jobs_dir = work_dir / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    queue = HttpJobQueue(url, key, wait_seconds=wait_seconds)
    daemon = ProvisionerDaemon(
        queue,
        available_provisioners(),
        DaemonOptions(
            name=name,
            identity=identity,
            tags=tags,
            heartbeat_interval=heartbeat_interval,
            work_root=jobs_dir,
            data_dir=work_dir,
            access_url=url,
        ),
    )
    loop = asyncio.get_running_loop()
    stop, force = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        (force if stop.is_set() else stop).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    runner = asyncio.create_task(daemon.run(), name="daemon")
    refused = asyncio.create_task(queue.refused.wait())
    waiters = [refused]
    try:
        stopping = asyncio.create_task(stop.wait())
        waiters.append(stopping)
        await asyncio.wait({runner, refused, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set() and not runner.done() and not queue.refused.is_set():
            log.info("provisioner.stopping", worker_id=daemon.worker_id, current_job=str(daemon.current_job))
            daemon.stop()
            queue.stop_acquiring()
            forced = asyncio.create_task(force.wait())
            waiters.append(forced)
            await asyncio.wait({runner, refused, forced}, return_when=asyncio.FIRST_COMPLETED)
        if not runner.done():  # refused, or a second signal
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            if not queue.refused.is_set():
                await _report_interrupted(queue, daemon)
        elif (
            not runner.cancelled()
            and (error := runner.exception()) is not None
            and not isinstance(error, StandaloneDaemonRefused)
        ):
            raise error
    finally:
        for waiter in waiters:
            waiter.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await queue.close()
    return None if queue.refusal is None else queue.refusal.message


async def _report_interrupted(queue: HttpJobQueue, daemon: ProvisionerDaemon) -> None:
    """Jobs cut short by a forced stop fail now, rather than when the server notices the missing heartbeat."""
    for job_id in daemon.interrupted:
        # A job that had finished but whose outcome was not delivered yet gets its real outcome, once more.
        outcome = daemon.undelivered.get(job_id) or JobOutcome(
            error=f"provisioner daemon {daemon.worker_id} was stopped before the job finished",
            failure_class=FailureClass.INFRASTRUCTURE,
        )
        with contextlib.suppress(Exception):
            await queue.complete(job_id, daemon.worker_id, outcome)


@provisioner_app.command("start")
def start(
    url: Annotated[str, typer.Option("--url", envvar="PREBUILDD_URL", help="The server's URL.")],
    key: Annotated[
        str,
        typer.Option(
            "--key",
            envvar="PREBUILDD_PROVISIONER_KEY",
            help="A provisioner key (pbk_…); prefer the variable, a flag shows in the process list.",
        ),
    ],
    tag: Annotated[
        list[str], typer.Option("--tag", help="KEY=VALUE offered to jobs; must be among the key's tags.")
    ] = [],  # noqa: B006
    name: Annotated[str, typer.Option("--name", help="This daemon's name (default: the host name).")] = "",
    identity: Annotated[
        str,
        typer.Option(
            "--identity",
            help="This daemon's identity, stable across its restarts and unique among the key's daemons: a "
            "restarted daemon fails the jobs its previous run held at once (default: created once in "
            "<work-dir>/daemon-identity from --name).",
        ),
    ] = "",
    work_dir: Annotated[
        Path | None,
        typer.Option(
            "--work-dir", help="Job directories and per-workspace data (default: <data dir>/provisioner)."
        ),
    ] = None,
    heartbeat_interval: Annotated[
        str, typer.Option(help="How often a running job reports it is alive.")
    ] = "10s",
    log_format: Annotated[str, typer.Option(help="console or json.")] = "console",
    log_level: Annotated[str, typer.Option()] = "info",
) -> None:
    """Run a standalone provisioner daemon that takes jobs from the server at --url, until SIGINT/SIGTERM."""
    if not key.startswith("pbk_"):
        _fail(
            "--key: that is not a provisioner key (they start with pbk_); create one with "
            "`prebuildd provisioner keys create`"
        )
    if log_format not in ("console", "json"):
        raise typer.BadParameter(f"--log-format {log_format!r}: expected console or json")
    configure_logging(log_format, log_level)
    name = name or socket.gethostname()
    work_dir = work_dir or default_data_dir() / "provisioner"
    try:
        held = hold_daemon_identity(work_dir, identity or None, name)
    except (IdentityInUse, ValueError, OSError) as exc:
        _fail(str(exc))
    refusal = asyncio.run(
        run_standalone(
            url,
            key,
            tags=parse_tags(tag),
            name=name,
            work_dir=work_dir,
            identity=held.value,
            heartbeat_interval=parse_duration_flag(heartbeat_interval),
        )
    )
    if refusal is not None:
        print(f"error: {refusal}", file=sys.stderr)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(provisioner_app)
