"""The job queue of a standalone daemon: the server's `/api/v1/provisioner/daemon/*` endpoints, with a key.

A standalone daemon holds a provisioner key and the server's URL, never database credentials. Acquire is a long
poll, so ``wait_for_jobs`` has nothing left to do. Network trouble is transient: every call raises a
``TransientError`` (``is_transient``) and the daemon retries it, logs and outcomes without limit, since losing them
would lose the job's result. A refused key (401), or a request the server refuses outright (400, e.g. tags the
key does not allow), is not transient: it raises a ``StandaloneDaemonRefused`` and sets ``refused``, so that
whoever runs the daemon stops it with that message instead of retrying for ever.

The client half of the wire format is here (the server half is ``prebuildd.api.provisioner_models``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import httpx
import structlog

import prebuildd
from prebuildd.domain import limits
from prebuildd.domain.jobs import JobType, Transition
from prebuildd.queue.port import AcquiredJob, BuildPayload, Heartbeat, JobOutcome, LogLine

log = structlog.get_logger(__name__)

API = "/api/v1/provisioner/daemon"
LOG_BATCH = 500


def log_batches(lines: Sequence[LogLine]) -> list[list[dict[str, str]]]:
    """The bodies' lines: at most ``LOG_BATCH`` lines and ``limits.LOG_POST_TOTAL`` characters per post, each
    line cut to ``limits.LOG_LINE`` (the server refuses larger ones)."""
    batches: list[list[dict[str, str]]] = []
    batch: list[dict[str, str]] = []
    size = 0
    for line in lines:
        output = line.output[: limits.LOG_LINE.maximum]
        if batch and (len(batch) >= LOG_BATCH or size + len(output) > limits.LOG_POST_TOTAL.maximum):
            batches.append(batch)
            batch, size = [], 0
        batch.append({"level": line.level, "stage": line.stage, "output": output})
        size += len(output)
    if batch:
        batches.append(batch)
    return batches


class StandaloneDaemonRefused(Exception):
    """The server refused this daemon for good; retrying cannot help."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProvisionerKeyRejected(StandaloneDaemonRefused):
    """The server refused the provisioner key (401): unknown, mistyped or revoked."""


class TransientError(ConnectionError):
    """A failure worth retrying: the server is unreachable, restarting or overloaded."""


class RequestRefused(Exception):
    """The server refused one request (a 4xx other than 401/404): retrying it unchanged cannot help."""


# -- wire format (client half) -----------------------------------------------------------------------------


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def acquired_job_from_json(data: Mapping[str, Any]) -> AcquiredJob:
    build = None
    if data.get("build") is not None:
        b = data["build"]
        build = BuildPayload(
            build_id=UUID(b["build_id"]),
            build_number=int(b["build_number"]),
            transition=Transition(b["transition"]),
            reason=str(b["reason"]),
            parameters={str(k): str(v) for k, v in b["parameters"].items()},
            state=_bytes(b.get("state")),
            workspace_id=UUID(b["workspace_id"]),
            workspace_name=str(b["workspace_name"]),
            owner_id=UUID(b["owner_id"]),
            owner_name=str(b["owner_name"]),
            template_name=str(b["template_name"]),
            version_id=UUID(b["version_id"]),
            preset_name=b.get("preset_name"),
            is_prebuild=bool(b["is_prebuild"]),
            agent_tokens={str(k): str(v) for k, v in (b.get("agent_tokens") or {}).items()},
        )
    version_id = data.get("version_id")
    return AcquiredJob(
        id=UUID(data["id"]),
        type=JobType(data["type"]),
        provisioner=str(data["provisioner"]),
        manifest=str(data["manifest"]),
        source=_bytes(data["source"]) or b"",
        source_hash=str(data["source_hash"]),
        build=build,
        version_id=UUID(version_id) if version_id else None,
    )


def outcome_to_json(outcome: JobOutcome) -> dict[str, Any]:
    return {
        "error": outcome.error,
        "failure_class": outcome.failure_class.value if outcome.failure_class else None,
        "canceled": outcome.canceled,
        "state": _b64(outcome.state),
        "outputs": dict(outcome.outputs),
        "parameters": [spec.to_json() for spec in outcome.parameters],
        "warnings": list(outcome.warnings),
    }


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(body)[:200]


# -- the queue ---------------------------------------------------------------------------------------------


class HttpJobQueue:
    """``JobQueue`` over the server's HTTP API, authenticated with a provisioner key."""

    dependency = "server"
    """What a daemon on this queue loses when calls fail (its outage log lines name it)."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        wait_seconds: float = 25.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.wait_seconds = wait_seconds
        self.refused = asyncio.Event()
        self.refusal: StandaloneDaemonRefused | None = None
        self._stop_acquiring = asyncio.Event()
        self._client = httpx.AsyncClient(
            base_url=self.url,
            headers={
                "Authorization": f"Bearer {key}",
                "User-Agent": f"prebuildd-provisioner/{prebuildd.__version__}",
            },
            timeout=httpx.Timeout(30.0, connect=10.0),
            transport=transport,
        )

    async def close(self) -> None:
        await self._client.aclose()

    def stop_acquiring(self) -> None:
        """Abandon a long poll in flight (a shutdown); later acquires return None at once."""
        self._stop_acquiring.set()

    def _refuse(self, error: StandaloneDaemonRefused) -> StandaloneDaemonRefused:
        if self.refusal is None:
            self.refusal = error
            log.error("provisioner.refused", url=self.url, error=error.message)
        self.refused.set()
        return error

    async def _post(
        self, path: str, body: Mapping[str, Any], *, timeout: float | None = None
    ) -> httpx.Response:
        try:
            response = await self._client.post(
                path, json=body, timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout
            )
        except httpx.TransportError as exc:
            raise TransientError(f"cannot reach {self.url}: {exc!r}") from exc
        if response.status_code == 401:
            raise self._refuse(
                ProvisionerKeyRejected(
                    f"the server at {self.url} refused the provisioner key: {_message(response)}. "
                    "An owner can create a new one with `prebuildd provisioner keys create NAME`"
                )
            )
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise TransientError(f"{self.url} answered {response.status_code}: {_message(response)}")
        return response

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        """The server is unreachable, restarting or overloaded (not a refusal)."""
        return isinstance(exc, TransientError)

    def _refused(self, what: str, response: httpx.Response) -> RequestRefused:
        return RequestRefused(f"the server refused {what} ({response.status_code}): {_message(response)}")

    async def register(self, identity: str, worker_id: str) -> list[UUID]:
        response = await self._post(f"{API}/register", {"identity": identity, "worker_id": worker_id})
        if response.status_code in (404, 405):  # a server from before daemon identities: nothing to fail
            log.info("provisioner.register_unsupported", url=self.url)
            return []
        if response.status_code in (400, 403):
            raise self._refuse(
                StandaloneDaemonRefused(f"the server at {self.url} refused this daemon: {_message(response)}")
            )
        response.raise_for_status()
        return [UUID(job_id) for job_id in response.json()["failed_jobs"]]

    async def acquire(
        self, worker_id: str, kinds: Sequence[str], tags: Mapping[str, str]
    ) -> AcquiredJob | None:
        if self._stop_acquiring.is_set():
            return None
        body = {
            "worker_id": worker_id,
            "kinds": list(kinds),
            "tags": dict(tags),
            "wait_seconds": self.wait_seconds,
        }
        request = asyncio.ensure_future(self._post(f"{API}/acquire", body, timeout=self.wait_seconds + 30.0))
        stopper = asyncio.ensure_future(self._stop_acquiring.wait())
        try:
            await asyncio.wait({request, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not request.done():
            # Shutting down: the server notices the closed connection and takes no job for us.
            request.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await request
            return None
        response = request.result()
        if response.status_code == 204:
            return None
        if response.status_code in (400, 403, 404):
            raise self._refuse(
                StandaloneDaemonRefused(f"the server at {self.url} refused this daemon: {_message(response)}")
            )
        response.raise_for_status()
        return acquired_job_from_json(response.json())

    async def wait_for_jobs(
        self,
        timeout: float,
        *,
        kinds: Sequence[str] = (),
        tags: Mapping[str, str] | None = None,
        worker_id: str | None = None,
    ) -> None:
        """Nothing to wait for: acquire already waited on the server."""

    async def heartbeat(self, job_id: UUID, worker_id: str) -> Heartbeat:
        response = await self._post(f"{API}/jobs/{job_id}/heartbeat", {"worker_id": worker_id})
        if response.status_code == 404:
            return Heartbeat.LOST
        response.raise_for_status()
        return Heartbeat(response.json()["status"])

    async def append_logs(self, job_id: UUID, worker_id: str, lines: Sequence[LogLine]) -> None:
        for batch in log_batches(lines):
            body = {"worker_id": worker_id, "lines": batch}
            response = await self._post(f"{API}/jobs/{job_id}/logs", body)
            if response.status_code == 404:  # the job is no longer ours: nobody wants its lines
                return
            if response.status_code == 400:  # a line the server cannot take: lose this batch, not the job
                log.warning(
                    "daemon.logs_refused", job_id=str(job_id), lines=len(batch), error=_message(response)
                )
                continue
            if response.status_code >= 400:
                raise self._refused("log lines", response)

    async def complete(self, job_id: UUID, worker_id: str, outcome: JobOutcome) -> bool:
        body = {"worker_id": worker_id, "outcome": outcome_to_json(outcome)}
        response = await self._post(f"{API}/jobs/{job_id}/complete", body)
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise self._refused("the outcome", response)
        return bool(response.json()["accepted"])
