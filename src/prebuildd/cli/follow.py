"""Waiting for jobs from the CLI: a workspace build (its followed log stream) or a template import (polled).

Both print the job's log lines as they arrive and return the finished build or version; the caller decides what
a failure means for its exit code. While the job is pending they ask the server why it waits (``GET
/jobs/{id}``: "no provisioner for kind exec") and say so on stderr whenever the reason changes, on a terminal or
not. With a deadline (``--timeout``) they give up with exit code ``TIMEOUT_EXIT`` and leave the job running.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from prebuildd.cli.client import ApiClient, fail, quote
from prebuildd.cli.output import Waiting
from prebuildd.domain.durations import format_duration, parse_duration

FINISHED = frozenset({"succeeded", "failed", "canceled"})
"""Job statuses after which nothing changes."""

POLL_SECONDS = 0.5
FOLLOW_SECONDS = 5.0
"""How long a followed log stream may stay silent before the job's status (and waiting reason) is read again."""
TIMEOUT_EXIT = 124
"""The exit code when --timeout elapses (as timeout(1)'s); the job itself goes on."""


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        parser=_duration,
        metavar="DURATION",
        help=f"With --wait: give up after this long (30s, 5m), exit code {TIMEOUT_EXIT}; the job goes on.",
        show_default=False,
    ),
]


def require_wait(wait: bool, timeout: float | None) -> None:
    """--timeout bounds a wait: without --wait it would say nothing, so it is a usage error."""
    if timeout is not None and not wait:
        raise typer.BadParameter("--timeout bounds --wait: pass both, or neither", param_hint="--timeout")


class Deadline:
    """When to stop waiting (``seconds`` None: never)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds

    def left(self, cap: float) -> float:
        """Seconds to wait at most before checking again: ``cap``, or less near the deadline."""
        return cap if self.at is None else max(min(cap, self.at - time.monotonic()), 0.0)

    def check(self, waiting: Waiting, what: str, hint: str) -> None:
        if self.at is not None and time.monotonic() >= self.at:
            waiting.stop()
            assert self.seconds is not None
            fail(
                f"gave up waiting for {what} after {format_duration(self.seconds)} (--timeout); {hint}",
                TIMEOUT_EXIT,
            )


class JobWatch:
    """The job behind a build or an import: says why it waits whenever that changes."""

    def __init__(self, api: ApiClient, job_id: object, waiting: Waiting) -> None:
        self.api, self.job_id, self.waiting = api, job_id, waiting
        self.status: str | None = None
        self.reason: str | None = None
        self.said = False

    def observe(self, status: str) -> None:
        """Note the job's status; while it is pending, read and say its waiting reason when it changes."""
        reason = self._reason() if status == "pending" else None
        if reason != self.reason:
            if reason is not None:
                self.waiting.say(f"waiting: {reason}")
                self.said = True
            elif status == "pending":
                self.waiting.say("waiting: a provisioner daemon can take it now")
            self.reason = reason
        if self.said and self.status == "pending" and status not in ("pending", "canceled"):
            self.waiting.say("job started")  # the end of the wait that was announced
        self.status = status
        suffix = f": {reason}" if reason else ""
        self.waiting.update(f"{self.waiting.base} ({status}{suffix})")

    def _reason(self) -> str | None:
        if not self.job_id:
            return None
        response = self.api.send("GET", f"/jobs/{quote(self.job_id)}")
        if response.status_code != 200:  # a server without the route, or a job not visible: no reason to show
            return None
        reason = response.json().get("waiting_reason")
        return str(reason) if reason else None


def build_of(api: ApiClient, workspace_id: str, build_id: str) -> dict[str, Any]:
    """The build ``build_id`` of a workspace, as it is now."""
    for build in api.get(f"/workspaces/{quote(workspace_id)}/builds"):
        if str(build["id"]) == str(build_id):
            return dict(build)
    fail(f"build {build_id} of workspace {workspace_id} not found")


def new_log_lines(api: ApiClient, path: str, after: Any, waiting: Waiting) -> Any:
    """Print the log lines at ``path`` after line id ``after``, page by page; the last id printed."""
    while True:
        page = api.get(path, {"after": after})
        if not page:
            return after
        for entry in page:
            waiting.log(entry)
            after = entry.get("id", after)


def print_build_logs(api: ApiClient, build_id: str, waiting: Waiting) -> None:
    """The build's log lines so far (no following)."""
    new_log_lines(api, f"/builds/{quote(build_id)}/logs", None, waiting)


def wait_for_build(
    api: ApiClient, build: dict[str, Any], waiting: Waiting, *, timeout: float | None = None, hint: str = ""
) -> dict[str, Any]:
    """Follow a build's logs until its job finishes; the finished build.

    A pending job is polled (with its waiting reason); a running one's log stream is followed, reconnecting
    from the last line seen whenever it ends or stays silent for ``FOLLOW_SECONDS``.
    """
    workspace_id, build_id = str(build["workspace_id"]), str(build["id"])
    deadline = Deadline(timeout)
    watch = JobWatch(api, build.get("job_id"), waiting)
    what = f"build #{build.get('build_number')}"
    after: Any = None
    while True:
        current = build_of(api, workspace_id, build_id)
        status = str(current.get("status"))
        watch.observe(status)
        if status in FINISHED:
            # the lines written between the last stream and the end
            after = new_log_lines(api, f"/builds/{quote(build_id)}/logs", after, waiting)
            return current
        deadline.check(waiting, what, hint)
        if status == "pending":
            time.sleep(deadline.left(POLL_SECONDS))
            continue
        stream = api.stream_ndjson(
            f"/builds/{quote(build_id)}/logs",
            {"follow": True, "after": after},
            read_timeout=max(deadline.left(FOLLOW_SECONDS), 0.1),
        )
        for entry in stream:
            if entry.get("end"):
                break
            waiting.log(entry)
            after = entry.get("id", after)


def wait_for_import(
    api: ApiClient,
    template: str,
    version: str,
    waiting: Waiting,
    *,
    timeout: float | None = None,
    hint: str = "",
) -> dict[str, Any]:
    """Poll a version's import job, printing its logs, until it finishes; the version as it is then.

    The status is read before the logs, so the logs read after a finished status are complete.
    """
    path = f"/templates/{quote(template)}/versions/{quote(version)}"
    deadline = Deadline(timeout)
    watch: JobWatch | None = None
    after: Any = None
    while True:
        current: dict[str, Any] = api.get(path)
        after = new_log_lines(api, f"{path}/logs", after, waiting)
        status = str(current.get("import_status"))
        watch = watch or JobWatch(api, current.get("job_id"), waiting)
        watch.observe(status)
        if status in FINISHED:
            return current
        deadline.check(waiting, f"the import of {template} {version}", hint)
        time.sleep(deadline.left(POLL_SECONDS))
