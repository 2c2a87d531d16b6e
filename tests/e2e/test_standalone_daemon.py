"""Standalone provisioner daemons: real `prebuildd provisioner start` processes running a server's jobs over HTTP.

The server runs with no embedded daemon, so every job here is run by the standalone process, which knows only
the server's URL and a provisioner key. Keys are refused everywhere but the daemon endpoints, API tokens there.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from prebuildd.api.context import Services
from prebuildd.api.provisioner_models import AcquiredJobOut, OutcomeIn, acquired_job_out, job_outcome
from prebuildd.domain.jobs import FailureClass, JobType, Transition
from prebuildd.domain.parameters import ParameterSpec, ParameterType
from prebuildd.identity.auth import create_token
from prebuildd.identity.users import create_user
from prebuildd.queue.http import (
    HttpJobQueue,
    ProvisionerKeyRejected,
    RequestRefused,
    TransientError,
    acquired_job_from_json,
    outcome_to_json,
)
from prebuildd.queue.port import AcquiredJob, BuildPayload, JobOutcome, LogLine
from prebuildd.store.rows import Row, fetch_one
from prebuildd.templates.archive import pack_directory
from prebuildd.templates.versions import PushedVersion, push_version
from prebuildd.workspaces.builder import BuildRequest
from tests.support.daemons import DaemonProcess, start_daemon
from tests.support.server import RunningServer, start_server
from tests.support.templates import write_template
from tests.support.waiting import wait_for

DAEMON = "/api/v1/provisioner/daemon"

EXEC_TEMPLATE = """
provisioner = "exec"
[exec]
create = "create.sh"
delete = "delete.sh"

[[parameters]]
name = "greeting"
type = "string"
default = "hello"
"""
EXEC_FILES = {
    "create.sh": '#!/bin/sh\necho "$PREBUILDD_PARAM_GREETING from $PREBUILDD_WORKSPACE_NAME"\n'
    'echo \'{"where": "standalone"}\' > "$PREBUILDD_OUTPUTS_FILE"\n',
    "delete.sh": "#!/bin/sh\necho removing\n",
}


@pytest.fixture
def server(idle_server: RunningServer) -> RunningServer:
    """No embedded daemon: every job here is run by a standalone process."""
    return idle_server


def services_of(running: RunningServer) -> Services:
    assert running.server.services is not None
    return running.server.services


async def owner_and_org(services: Services) -> tuple[UUID, UUID]:
    async with services.db.transaction() as conn:
        owner = await fetch_one(conn, "identity.first_owner")
        org = await fetch_one(conn, "identity.default_organization")
    assert owner is not None and org is not None
    return owner["id"], org["id"]


async def job_row(services: Services, job_id: UUID) -> Row:
    async with services.db.transaction() as conn:
        row = await fetch_one(conn, "jobs.by_id", {"id": job_id})
    assert row is not None
    return row


async def wait_job(services: Services, job_id: UUID, status: str, timeout: float = 60.0) -> Row:
    async def reached() -> bool:
        return (await job_row(services, job_id))["job_status"] in (status, "failed", "succeeded", "canceled")

    await wait_for(reached, timeout=timeout, what=f"job {job_id} {status}")
    row = await job_row(services, job_id)
    assert row["job_status"] == status, (row["job_status"], row["error"])
    return row


async def push(
    services: Services, tmp: Path, name: str, manifest: str, files: dict[str, str]
) -> PushedVersion:
    owner_id, org_id = await owner_and_org(services)
    directory = write_template(tmp / f"template-{name}-{uuid4().hex[:6]}", manifest, files)
    return await push_version(
        services.db,
        services.clock,
        organization_id=org_id,
        template_name=name,
        archive=pack_directory(directory),
        created_by=owner_id,
        activate=True,
    )


async def build_workspace(services: Services, template_id: UUID, name: str, **parameters: str) -> UUID:
    owner_id, _ = await owner_and_org(services)
    request = BuildRequest(
        transition=Transition.START,
        initiator_id=owner_id,
        owner_id=owner_id,
        template_id=template_id,
        name=name,
        parameters=parameters,
    )
    async with services.db.transaction() as conn:
        return (await services.builder.build(conn, request)).job_id


async def log_text(services: Services, job_id: UUID) -> str:
    return "\n".join(line.output for line in await services.queue.logs(job_id))


async def cli(running: RunningServer, *args: str, token: str | None = None) -> tuple[int, str, str]:
    """`python -m prebuildd …` as a real process, with the server's URL and a token in the environment."""
    env = {**os.environ, "PREBUILDD_URL": running.url, "PREBUILDD_TOKEN": token or running.owner_token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "prebuildd",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


async def create_key(running: RunningServer, name: str, *tags: str) -> str:
    args = [arg for tag in tags for arg in ("--tag", tag)]
    code, stdout, stderr = await cli(running, "provisioner", "keys", "create", name, *args)
    assert code == 0, stderr
    assert "shown only once" in stderr
    secret = stdout.strip()
    assert secret.startswith("pbk_")
    return secret


# -- a standalone daemon runs the jobs --------------------------------------------------------------------


async def test_a_standalone_daemon_runs_imports_and_builds_and_stops_when_its_key_is_revoked(
    server: RunningServer, tmp_path: Path
) -> None:
    services = services_of(server)
    key = await create_key(server, "builder-1", "zone=lab", "arch=amd64")
    code, stdout, _ = await cli(server, "provisioner", "keys", "list", "--json")
    assert code == 0
    listed = json.loads(stdout)
    assert [(k["name"], k["tags"]) for k in listed] == [("builder-1", {"zone": "lab", "arch": "amd64"})]
    assert "pbk_" not in stdout  # the secret is never shown again

    daemon = await start_daemon(server.url, key, tmp_path / "daemon", "--tag", "zone=lab")
    try:
        pushed = await push(services, tmp_path, "standalone", EXEC_TEMPLATE, EXEC_FILES)
        imported = await wait_job(services, pushed.job_id, "succeeded")
        assert "standalone" in imported["worker_id"]
        async with services.db.transaction() as conn:
            params = await fetch_one(conn, "templates.version_parameters", {"version_id": pushed.version_id})
        assert params is not None and params["name"] == "greeting"  # the import outcome came back over HTTP

        job_id = await build_workspace(services, pushed.template_id, "ws-standalone", greeting="bonjour")
        built = await wait_job(services, job_id, "succeeded")
        assert "standalone" in built["worker_id"]
        assert "bonjour from ws-standalone" in await log_text(services, job_id)
        async with services.db.transaction() as conn:
            cur = await conn.execute("SELECT outputs FROM workspace_builds WHERE job_id = %s", (job_id,))
            build = await cur.fetchone()
        assert build is not None and build["outputs"] == {"where": "standalone"}

        code, _, stderr = await cli(server, "provisioner", "keys", "revoke", "builder-1")
        assert code == 0, stderr
        assert await daemon.exited() != 0
        assert "refused the provisioner key" in daemon.stderr
        assert "revoked" in daemon.stderr
        code, stdout, _ = await cli(server, "provisioner", "keys", "list", "--json")
        assert json.loads(stdout) == []
    finally:
        await daemon.kill()


BLOCKING_TEMPLATE = """
provisioner = "exec"
[exec]
create = "create.sh"
"""


async def test_sigterm_stops_taking_jobs_and_finishes_the_current_one(
    server: RunningServer, tmp_path: Path
) -> None:
    services = services_of(server)
    release = tmp_path / "release"
    files = {
        "create.sh": f'#!/bin/sh\necho "started $PREBUILDD_WORKSPACE_NAME"\n'
        f'while [ ! -f "{release}" ]; do sleep 0.05; done\necho finished\n'
    }
    pushed = await push(services, tmp_path, "blocking", BLOCKING_TEMPLATE, files)
    key = await create_key(server, "builder-2")
    daemon = await start_daemon(server.url, key, tmp_path / "daemon")
    try:
        await wait_job(services, pushed.job_id, "succeeded")
        first = await build_workspace(services, pushed.template_id, "first")

        async def first_started() -> bool:
            return "started first" in await log_text(services, first)

        await wait_for(first_started, timeout=60, what="the first build to start")
        second = await build_workspace(services, pushed.template_id, "second")
        daemon.proc.send_signal(signal.SIGTERM)

        async def stopping() -> bool:
            return "provisioner.stopping" in daemon.stderr

        await wait_for(stopping, what="the daemon to start stopping")
        assert daemon.proc.returncode is None  # still running the first job
        release.touch()
        assert await daemon.exited() == 0, daemon.stderr
        assert (await job_row(services, first))["job_status"] == "succeeded"
        assert "finished" in await log_text(services, first)
        assert (await job_row(services, second))["job_status"] == "pending"  # not taken after the signal
    finally:
        await daemon.kill()


async def test_a_second_signal_interrupts_the_current_job_and_reports_it_failed(
    server: RunningServer, tmp_path: Path
) -> None:
    services = services_of(server)
    files = {"create.sh": '#!/bin/sh\necho "started"\nwhile true; do sleep 0.05; done\n'}
    pushed = await push(services, tmp_path, "endless", BLOCKING_TEMPLATE, files)
    key = await create_key(server, "builder-4")
    daemon = await start_daemon(server.url, key, tmp_path / "daemon")
    try:
        await wait_job(services, pushed.job_id, "succeeded")
        job_id = await build_workspace(services, pushed.template_id, "endless")

        async def started() -> bool:
            return "started" in await log_text(services, job_id)

        await wait_for(started, timeout=60, what="the build to start")
        daemon.proc.send_signal(signal.SIGTERM)

        async def stopping() -> bool:  # signals are not queued: the second must come after the first was seen
            return "provisioner.stopping" in daemon.stderr

        await wait_for(stopping, what="the daemon to start stopping")
        daemon.proc.send_signal(signal.SIGTERM)
        assert await daemon.exited() == 0, daemon.stderr
        failed = await job_row(services, job_id)
        assert failed["job_status"] == "failed" and failed["failure_class"] == "infrastructure"
        assert "was stopped before the job finished" in failed["error"]
    finally:
        await daemon.kill()


# -- outages and restarts ---------------------------------------------------------------------------------


async def test_a_job_finished_while_the_server_is_away_is_completed_when_it_is_back(
    database_url: str, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    files = {
        "create.sh": f'#!/bin/sh\necho "started $PREBUILDD_WORKSPACE_NAME"\n'
        f'while [ ! -f "{release}" ]; do sleep 0.05; done\necho finished\n'
        'echo \'{"where": "after the outage"}\' > "$PREBUILDD_OUTPUTS_FILE"\n'
    }
    first = await start_server(database_url, tmp_path / "server", provisioner_daemons=0)
    running: RunningServer | None = first
    daemon: DaemonProcess | None = None
    try:
        services = services_of(first)
        pushed = await push(services, tmp_path, "blocking", BLOCKING_TEMPLATE, files)
        key = await create_key(first, "builder-outage")
        daemon = await start_daemon(first.url, key, tmp_path / "daemon")
        await wait_job(services, pushed.job_id, "succeeded")
        job_id = await build_workspace(services, pushed.template_id, "outage")

        async def started() -> bool:
            return "started outage" in await log_text(services, job_id)

        await wait_for(started, timeout=60, what="the build to start")
        port = first.server.bound_port
        await first.server.stop()  # the server goes away while the job runs
        running = None
        release.touch()  # the job finishes now, with nobody to take its outcome

        def unavailable() -> bool:
            assert daemon is not None
            return "component.unavailable" in daemon.stderr

        await wait_for(unavailable, timeout=30, what="the daemon to notice the server is away")
        assert daemon.proc.returncode is None
        running = await start_server(
            database_url, tmp_path / "server", provisioner_daemons=0, http_address=f"127.0.0.1:{port}"
        )
        services = services_of(running)
        done = await wait_job(services, job_id, "succeeded")
        assert done["worker_id"].startswith(daemon_identity(tmp_path / "daemon") + "#")

        # The lines it kept meanwhile, all of them: the completion waits for them (a completed job takes none).
        assert "finished" in await log_text(services, job_id)
        async with services.db.transaction() as conn:
            cur = await conn.execute("SELECT outputs FROM workspace_builds WHERE job_id = %s", (job_id,))
            build = await cur.fetchone()
        assert build is not None and build["outputs"] == {"where": "after the outage"}
        # One line when the server went away, one when it was back; the daemon lives on and takes jobs.
        assert daemon.stderr.count("component.unavailable") == 1
        assert daemon.stderr.count("component.recovered") == 1
        assert "dependency=server" in re.sub(r"\x1b\[[0-9;]*m", "", daemon.stderr)  # no colours
        following = await build_workspace(services, pushed.template_id, "after")
        await wait_job(services, following, "succeeded")
        assert daemon.proc.returncode is None
    finally:
        release.touch()
        if daemon is not None:
            await daemon.kill()
        if running is not None:
            await running.server.stop()


def daemon_identity(work: Path) -> str:
    return (work / "data" / "daemon-identity").read_text().strip()


async def test_a_restarted_standalone_daemon_fails_its_previous_runs_job_at_once(
    server: RunningServer, tmp_path: Path
) -> None:
    services = services_of(server)
    release = tmp_path / "release"
    files = {"create.sh": f'#!/bin/sh\necho "started"\nwhile [ ! -f "{release}" ]; do sleep 0.05; done\n'}
    pushed = await push(services, tmp_path, "blocking", BLOCKING_TEMPLATE, files)
    key = await create_key(server, "builder-restart")
    work = tmp_path / "daemon"
    daemon = await start_daemon(server.url, key, work)
    again: DaemonProcess | None = None
    try:
        await wait_job(services, pushed.job_id, "succeeded")
        job_id = await build_workspace(services, pushed.template_id, "restart")

        async def started() -> bool:
            return "started" in await log_text(services, job_id)

        await wait_for(started, timeout=60, what="the build to start")
        identity = daemon_identity(work)
        # A second daemon on the same work dir while the first runs would share its identity: refused.
        twin = await start_daemon(server.url, key, work)
        assert await twin.exited() == 1
        assert "holds" in twin.stderr and "daemon-identity" in twin.stderr
        await daemon.kill()  # kill -9: the job stays running, its heartbeats stop
        assert (await job_row(services, job_id))["job_status"] == "running"
        again = await start_daemon(server.url, key, work)
        failed = await wait_job(
            services, job_id, "failed", timeout=30
        )  # at once, not after the stale timeout
        assert failed["failure_class"] == "daemon_lost"
        assert f"its daemon {identity} restarted" in failed["error"]
        assert daemon_identity(work) == identity
    finally:
        release.touch()
        await daemon.kill()
        if again is not None:
            await again.kill()


# -- who may call what ------------------------------------------------------------------------------------


async def test_a_key_is_refused_by_every_other_endpoint_and_a_token_by_the_daemon_endpoints(
    server: RunningServer,
) -> None:
    key = await create_key(server, "builder-3")
    async with server.client() as anonymous:
        anonymous.headers.pop("Authorization")
        schema = (await anonymous.get("/openapi.json")).json()
        checked = []
        for path, operations in schema["paths"].items():
            if not path.startswith("/api/v1/") or path.startswith(DAEMON):
                continue
            concrete = path.replace("{", "").replace("}", "")  # any value will do: auth comes first
            for method in operations:
                if (await anonymous.request(method, concrete)).status_code != 401:
                    continue  # a public endpoint
                response = await anonymous.request(
                    method, concrete, headers={"Authorization": f"Bearer {key}"}
                )
                assert response.status_code == 401, (method, path, response.text)
                checked.append((method.upper(), path))
        assert ("GET", "/api/v1/provisioner-keys") in checked
        assert ("GET", "/api/v1/prebuilds/status") in checked
        for path in ("/api/v1/users/me", "/api/v1/templates", "/api/v1/workspaces"):
            if path in schema["paths"]:
                assert ("GET", path) in checked

    job = uuid4()
    bodies = {
        f"{DAEMON}/acquire": {"worker_id": "w", "kinds": ["exec"]},
        f"{DAEMON}/jobs/{job}/heartbeat": {"worker_id": "w"},
        f"{DAEMON}/jobs/{job}/logs": {"worker_id": "w", "lines": []},
        f"{DAEMON}/jobs/{job}/complete": {"worker_id": "w", "outcome": {}},
    }
    async with server.client() as with_token:
        for path, body in bodies.items():
            response = await with_token.post(path, json=body)
            assert response.status_code == 401, (path, response.text)
            assert "provisioner key" in response.json()["message"]
    async with server.client(key) as with_key:  # the same calls with the key get past authentication
        assert (await with_key.post(f"{DAEMON}/acquire", json=bodies[f"{DAEMON}/acquire"])).status_code == 204
        response = await with_key.post(f"{DAEMON}/jobs/{job}/heartbeat", json={"worker_id": "w"})
        assert response.status_code == 404  # no such job in the key's organization


async def test_only_owners_manage_keys_and_a_secret_is_shown_once(server: RunningServer) -> None:
    services = services_of(server)
    admin = await create_user(services.db, services.clock, username="ta", role="template-admin")
    _, admin_token = await create_token(services.db, services.clock, user_id=admin.id, name="t")
    async with server.client(admin_token) as client:
        assert (await client.get("/api/v1/provisioner-keys")).status_code == 403
        assert (await client.post("/api/v1/provisioner-keys", json={"name": "x"})).status_code == 403
    code, _, stderr = await cli(server, "provisioner", "keys", "create", "x", token=admin_token)
    assert code == 1 and "owner" in stderr

    async with server.client() as client:
        created = await client.post("/api/v1/provisioner-keys", json={"name": "gpu", "tags": {"gpu": "a100"}})
        assert created.status_code == 201, created.text
        assert created.json()["secret"].startswith("pbk_")
        again = await client.post("/api/v1/provisioner-keys", json={"name": "GPU"})
        assert again.status_code == 409
        bad = await client.post("/api/v1/provisioner-keys", json={"name": "no spaces"})
        assert bad.status_code == 400 and "name" in bad.json()["message"]
        listed = (await client.get("/api/v1/provisioner-keys")).json()
        assert [k["name"] for k in listed] == ["gpu"] and "secret" not in listed[0]
        assert (await client.delete("/api/v1/provisioner-keys/gpu")).status_code == 204
        assert (await client.delete("/api/v1/provisioner-keys/gpu")).status_code == 404
        assert (await client.get("/api/v1/provisioner-keys")).json() == []
        revoked = (await client.get("/api/v1/provisioner-keys", params={"include_revoked": True})).json()
        assert revoked[0]["revoked_at"] is not None
        # The name is free again once revoked.
        assert (await client.post("/api/v1/provisioner-keys", json={"name": "gpu"})).status_code == 201


# -- tags ------------------------------------------------------------------------------------------------


async def test_a_daemon_may_offer_only_its_keys_tags(server: RunningServer, tmp_path: Path) -> None:
    key = await create_key(server, "lab-only", "zone=lab")
    async with server.client(key) as client:
        body: dict[str, Any] = {"worker_id": "w", "kinds": ["exec"]}
        for tags in ({"zone": "prod"}, {"zone": "lab", "gpu": "yes"}):
            response = await client.post(f"{DAEMON}/acquire", json={**body, "tags": tags})
            assert response.status_code == 400, response.text
            assert "does not allow" in response.json()["message"]
        for tags in ({}, {"zone": "lab"}):
            assert (await client.post(f"{DAEMON}/acquire", json={**body, "tags": tags})).status_code == 204

    daemon = await start_daemon(server.url, key, tmp_path / "daemon", "--tag", "zone=prod")
    try:
        assert await daemon.exited() != 0
        assert "zone=prod" in daemon.stderr and "refused this daemon" in daemon.stderr
    finally:
        await daemon.kill()


# -- the wire format -------------------------------------------------------------------------------------


def test_jobs_and_outcomes_cross_the_wire_unchanged() -> None:
    build = BuildPayload(
        build_id=uuid4(),
        build_number=3,
        transition=Transition.STOP,
        reason="initiator",
        parameters={"repo": "x", "cpu": "2"},
        state=bytes(range(256)),
        workspace_id=uuid4(),
        workspace_name="ws",
        owner_id=uuid4(),
        owner_name="alice",
        template_name="t",
        version_id=uuid4(),
        preset_name=None,
        is_prebuild=True,
        agent_tokens={"main": "pba_secret"},
    )
    job = AcquiredJob(
        uuid4(), JobType.WORKSPACE_BUILD, "exec", "m", b"\x1f\x8b\x00", "h", build, build.version_id
    )
    wire = json.loads(AcquiredJobOut.model_validate(acquired_job_out(job)).model_dump_json())
    assert acquired_job_from_json(wire) == job
    bare = AcquiredJob(uuid4(), JobType.TEMPLATE_VERSION_IMPORT, "echo", "m", b"", "h", version_id=uuid4())
    assert acquired_job_from_json(json.loads(acquired_job_out(bare).model_dump_json())) == bare

    outcome = JobOutcome(
        error="boom",
        failure_class=FailureClass.INFRASTRUCTURE,
        state=b"\x00state",
        outputs={"url": "http://x", "n": [1, 2]},
        parameters=(ParameterSpec("cpu", ParameterType.NUMBER, default="2", validation_min=1.0),),
        warnings=("w",),
    )
    sent = json.loads(json.dumps(outcome_to_json(outcome)))
    assert job_outcome(OutcomeIn.model_validate(sent)) == outcome
    assert base64.b64decode(sent["state"]) == b"\x00state"


async def test_the_http_queue_reports_outages_as_transient_and_stops_on_a_refused_key() -> None:
    calls: list[str] = []
    answers = {
        "complete": [503, 200, 404, 400],
        "heartbeat": [401],
        "logs": [400, 403],
        "register": [200, 404],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        what = request.url.path.rsplit("/", 1)[-1]
        calls.append(what)
        if what == "logs" and len([c for c in calls if c == "logs"]) == 1:
            raise httpx.ConnectError("connection refused")
        status = answers[what].pop(0)
        if status == 200:
            body: dict[str, Any] = {"accepted": True, "failed_jobs": [str(UUID(int=7))]}
        else:
            body = {"message": "invalid or revoked provisioner key" if status == 401 else "no"}
        return httpx.Response(status, json=body)

    queue = HttpJobQueue("http://server", "pbk_x", transport=httpx.MockTransport(handler))
    try:
        job = uuid4()
        assert queue.dependency == "server"
        # An outage raises at once; the daemon retries it (with its backoff and one log line per outage).
        with pytest.raises(TransientError) as outage:
            await queue.complete(job, "w#1", JobOutcome())
        assert queue.is_transient(outage.value)
        assert await queue.complete(job, "w#1", JobOutcome()) is True
        assert await queue.complete(job, "w#1", JobOutcome()) is False  # 404: not this daemon's job
        with pytest.raises(RequestRefused) as refused:  # a refusal is not an outage: not retried for ever
            await queue.complete(job, "w#1", JobOutcome())
        assert not queue.is_transient(refused.value)
        with pytest.raises(TransientError):
            await queue.append_logs(job, "w#1", [LogLine("info", "", "x")])
        # A batch the server cannot take (400: a line it refuses) is lost alone: later batches still go out.
        await queue.append_logs(job, "w#1", [LogLine("info", "", "x")])
        with pytest.raises(RequestRefused):  # any other refusal stops the job's log sends
            await queue.append_logs(job, "w#1", [LogLine("info", "", "x")])
        assert await queue.register("w", "w#1") == [UUID(int=7)]
        assert await queue.register("w", "w#1") == []  # a server from before identities
        assert not queue.refused.is_set()
        with pytest.raises(ProvisionerKeyRejected, match="refused the provisioner key"):
            await queue.heartbeat(job, "w#1")
        assert queue.refused.is_set() and queue.refusal is not None
    finally:
        await queue.close()
