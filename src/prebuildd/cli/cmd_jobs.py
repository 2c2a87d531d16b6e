"""`prebuildd jobs list|cancel`: the provisioner job queue (template admins)."""

from __future__ import annotations

from typing import Annotated

import typer

from prebuildd.cli.client import TokenOption, UrlOption, connect, quote
from prebuildd.cli.output import JsonOption, age, note, print_json, print_table

jobs_app = typer.Typer(
    name="jobs", help="Provisioner jobs: imports and workspace builds.", no_args_is_help=True
)

STATUSES = ("pending", "running", "succeeded", "failed", "canceling", "canceled")


def _status(value: str | None) -> str | None:
    if value is not None and value not in STATUSES:
        raise typer.BadParameter(f"{value!r}: expected one of {', '.join(STATUSES)}")
    return value


@jobs_app.command("list")
def list_jobs(
    status: Annotated[
        str | None, typer.Option("--status", "-s", help="Only jobs in this status.", callback=_status)
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="At most this many.")] = None,
    wide: Annotated[
        bool, typer.Option("--wide", "-w", help="Every column, nothing cut (wider than 80 columns).")
    ] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Jobs, newest first; a pending job says why it is waiting."""
    with connect(url, token) as api:
        jobs = api.get("/jobs", {"status": status, "limit": limit})
    if as_json:
        print_json(jobs)
        return
    if wide:
        print_table(
            ["ID", "TYPE", "PROVISIONER", "STATUS", "CREATED", "WORKER", "ERROR / WAITING"],
            (
                [
                    j["id"],
                    j.get("type"),
                    j.get("provisioner"),
                    j.get("status"),
                    age(j.get("created_at")),
                    j.get("worker_id"),
                    j.get("error") or j.get("waiting_reason"),
                ]
                for j in jobs
            ),
            empty="No jobs.",
            cut=False,
        )
        return
    print_table(
        ["ID", "TYPE", "STATUS", "CREATED", "ERROR/WAITING"],
        (
            [
                j["id"],
                _SHORT_TYPES.get(str(j.get("type")), j.get("type")),
                j.get("status"),
                age(j.get("created_at")),
                j.get("error") or j.get("waiting_reason"),
            ]
            for j in jobs
        ),
        empty="No jobs.",
        keep=("TYPE", "STATUS"),
    )


_SHORT_TYPES = {"workspace_build": "build", "template_version_import": "import"}


@jobs_app.command("cancel")
def cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id.", show_default=False, metavar="ID")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Cancel a pending or running job."""
    with connect(url, token) as api:
        job = api.post(f"/jobs/{quote(job_id)}/cancel")
    note(f"Job {job['id']} is {job.get('status')}.")
