"""Waiting for jobs from the CLI: a workspace build (its followed log stream) or a template import (polled).

Both print the job's log lines as they arrive and return the finished build or version; the caller decides what
a failure means for its exit code.
"""

from __future__ import annotations

import time
from typing import Any

from prebuildd.cli.client import ApiClient, fail, quote
from prebuildd.cli.output import Waiting

FINISHED = frozenset({"succeeded", "failed", "canceled"})
"""Job statuses after which nothing changes."""

POLL_SECONDS = 0.5


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


def wait_for_build(api: ApiClient, build: dict[str, Any], waiting: Waiting) -> dict[str, Any]:
    """Follow a build's logs until its job finishes; the finished build.

    The log stream ends with an end marker when the job finishes; if the connection ends before that, the
    build's status decides whether to reconnect (from the last line seen) or stop.
    """
    workspace_id, build_id = str(build["workspace_id"]), str(build["id"])
    after: Any = None
    while True:
        ended = False
        for entry in api.stream_ndjson(f"/builds/{quote(build_id)}/logs", {"follow": True, "after": after}):
            if entry.get("end"):
                ended = True
                break
            waiting.log(entry)
            after = entry.get("id", after)
        current = build_of(api, workspace_id, build_id)
        status = str(current.get("status"))
        if status in FINISHED:
            return current
        waiting.update(f"{waiting.description} ({status})")
        if ended:  # the stream said it finished but the build is not updated yet
            time.sleep(POLL_SECONDS / 5)
        else:
            time.sleep(POLL_SECONDS)


def wait_for_import(api: ApiClient, template: str, version: str, waiting: Waiting) -> dict[str, Any]:
    """Poll a version's import job, printing its logs, until it finishes; the version as it is then.

    The status is read before the logs, so the logs read after a finished status are complete.
    """
    path = f"/templates/{quote(template)}/versions/{quote(version)}"
    after: Any = None
    while True:
        current: dict[str, Any] = api.get(path)
        after = new_log_lines(api, f"{path}/logs", after, waiting)
        status = str(current.get("import_status"))
        if status in FINISHED:
            return current
        waiting.update(f"importing {template} {version} ({status})")
        time.sleep(POLL_SECONDS)
