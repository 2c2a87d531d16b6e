"""Bad input cannot kill or stall: every input that once reached a 500 (or stalled the event loop) is a
400/413 naming the field or limit, and the daemons, embedded and standalone, keep taking the next job."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import tarfile
import threading
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

from prebuildd.api.provisioner_models import LogLevel
from prebuildd.queue.port import LOG_LEVELS, storable_log_text
from prebuildd.templates import versions
from prebuildd.templates.archive import (
    MAX_ARCHIVE_ENTRIES,
    MAX_INFLATED_BYTES,
    MAX_PATH_DEPTH,
    MAX_TEMPLATE_BYTES,
    check_archive,
    pack_directory,
)
from tests.support.api import API, push, wait_build, wait_imported
from tests.support.daemons import start_daemon
from tests.support.server import RunningServer
from tests.support.templates import write_template
from tests.support.waiting import wait_for

ECHO = 'provisioner = "echo"\n'

NUMBER_TEMPLATE = """
provisioner = "echo"

[[parameters]]
name = "cpu"
type = "number"
default = 2

[[presets]]
name = "small"
parameters = { cpu = 1 }
"""

NUL_TEMPLATE = """
provisioner = "exec"
[exec]
create = "create.sh"
"""
NUL_FILES = {"create.sh": "#!/bin/sh\nprintf 'before\\000after\\n'\necho done\n"}


async def _post_archive(client: httpx.AsyncClient, name: str, archive: bytes) -> httpx.Response:
    return await client.post(
        f"{API}/templates/{name}/versions", content=archive, headers={"Content-Type": "application/gzip"}
    )


async def _a_good_push_imports(client: httpx.AsyncClient, tmp_path: Path, name: str) -> None:
    """The daemons are alive: the next job (an import) is taken and succeeds."""
    pushed = await push(client, tmp_path, name, ECHO)
    assert pushed.status_code == 201, pushed.text
    assert (await wait_imported(client, name, "v1"))["import_status"] == "succeeded"


# -- manifests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("manifest", "key", "reason"),
    [
        (
            ECHO + '[[presets]]\nname = "p"\nprebuilds = { instances = 1000000000000 }\n',
            "presets[p].prebuilds.instances",
            "must be at most 1000",
        ),
        (
            ECHO + "[echo.import]\noutputs = { n = " + "1" * 5000 + " }\n",
            "echo.import.outputs",
            "line 3: integer",
        ),
        (
            ECHO + "[echo.import]\noutputs = { n = " + "[" * 5000 + "]" * 5000 + " }\n",
            "echo.import.outputs",
            "line 3: nested more than 32 levels deep",
        ),
        (ECHO + "[echo.start]\noutputs = { n = 9223372036854775808 }\n", "echo.start.outputs.n", "64-bit"),
        (ECHO + "[echo.start]\noutputs = { n = nan }\n", "echo.start.outputs.n", "finite"),
        (ECHO + "[echo.start]\ndelay = " + "9" * 400 + "\n", "echo.start.delay", "64-bit"),
        (
            ECHO + '[[parameters]]\nname = "n"\ntype = "number"\ndefault = "' + "1" * 5000 + '"\n',
            "parameters[n].default",
            "number out of range",
        ),
    ],
    ids=["instances", "5000-digits", "5000-deep", "int64", "nan", "delay", "number-default"],
)
async def test_a_manifest_out_of_range_is_a_400_naming_the_key_and_the_daemons_keep_importing(
    running_server: RunningServer, tmp_path: Path, manifest: str, key: str, reason: str
) -> None:
    async with running_server.client() as client:
        refused = await push(client, tmp_path, "bad", manifest)
        assert refused.status_code == 400, refused.text
        body = refused.json()
        assert body["code"] == "invalid_manifest"
        assert body["detail"]["key"] == key, body
        assert reason in body["detail"]["reason"], body
        assert (await client.get(f"{API}/templates")).json() == []
        await _a_good_push_imports(client, tmp_path, "good")


# -- archives ----------------------------------------------------------------------------------------------


def _tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for info, content in members:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


def _file(name: str, content: bytes = b"") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, content


MANIFEST = _file("prebuildd.toml", ECHO.encode())


def many_entries(count: int) -> bytes:
    return _tar_gz([MANIFEST, *(_file(f"f{i}") for i in range(count))])


def inflating_to_a_gibibyte() -> bytes:
    """About 1 MiB that inflates to 1 GiB: a manifest, then one file header claiming 1 GiB of zeros, the zeros
    as gzip members of 8 MiB each (a gzip stream may hold many members; each compresses to a few KiB)."""
    manifest, content = MANIFEST
    info = tarfile.TarInfo("zeros.bin")
    info.size = 1024**3
    padding = b"\0" * (-len(content) % tarfile.BLOCKSIZE)
    head = manifest.tobuf(tarfile.PAX_FORMAT) + content + padding + info.tobuf(tarfile.PAX_FORMAT)
    zeros = gzip.compress(b"\0" * (8 * 1024 * 1024), mtime=0)
    return gzip.compress(head, mtime=0) + zeros * 128


def a_pax_header_of_64_mib() -> bytes:
    """Small compressed; its one header's metadata alone inflates past every limit."""
    info, content = _file("big-header")
    info.pax_headers = {"comment": "x" * (64 * 1024 * 1024)}
    return _tar_gz([MANIFEST, (info, content)])


def too_deep() -> bytes:
    return _tar_gz([MANIFEST, _file("/".join(["d"] * (MAX_PATH_DEPTH + 1)) + "/f")])


def test_the_bombs_are_what_they_say() -> None:
    assert len(inflating_to_a_gibibyte()) < 2 * 1024 * 1024
    assert len(a_pax_header_of_64_mib()) < 1024 * 1024
    with gzip.GzipFile(fileobj=io.BytesIO(inflating_to_a_gibibyte())) as stream:
        total = 0
        while chunk := stream.read(64 * 1024 * 1024):
            total += len(chunk)
    assert total > 1024**3


async def test_archive_bombs_are_refused_naming_the_limit_and_the_daemons_keep_importing(
    running_server: RunningServer, tmp_path: Path
) -> None:
    cases: list[tuple[bytes, int, str, str]] = [
        (many_entries(50_000), 413, "entries", f"more than {MAX_ARCHIVE_ENTRIES} entries"),
        (inflating_to_a_gibibyte(), 413, "size", "archive files exceed 10 MiB in total"),
        (a_pax_header_of_64_mib(), 413, "inflated", f"inflates to more than {MAX_INFLATED_BYTES >> 20} MiB"),
        (too_deep(), 400, "depth", f"at most {MAX_PATH_DEPTH} directories deep"),
    ]
    async with running_server.client() as client:
        for archive, status, limit, message in cases:
            refused = await _post_archive(client, "bomb", archive)
            assert refused.status_code == status, (limit, refused.text)
            assert message in refused.json()["message"], refused.text
            assert refused.json()["detail"]["limit"] == limit
        compressed = await _post_archive(client, "bomb", os.urandom(MAX_TEMPLATE_BYTES + 1))
        assert compressed.status_code == 413 and "at most 10 MiB" in compressed.json()["message"]
        assert (await client.get(f"{API}/templates")).json() == []
        await _a_good_push_imports(client, tmp_path, "good")


def test_the_limits_themselves_are_accepted() -> None:
    check_archive(many_entries(MAX_ARCHIVE_ENTRIES - 1))
    check_archive(_tar_gz([MANIFEST, _file("/".join(["d"] * (MAX_PATH_DEPTH - 1)) + "/f")]))
    check_archive(_tar_gz([MANIFEST, _file("big", os.urandom(MAX_TEMPLATE_BYTES - 1024))]))


@pytest.fixture
def check_in_progress(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Holds the push's archive check until the test has been answered by /healthz (or 10 s pass), and
    records the thread it ran in."""
    seen: dict[str, Any] = {"started": threading.Event(), "release": threading.Event(), "done": False}
    real = versions.check_archive

    def held(data: bytes) -> None:
        seen["thread"] = threading.current_thread()
        seen["started"].set()
        seen["release"].wait(timeout=10)
        real(data)
        seen["done"] = True

    monkeypatch.setattr(versions, "check_archive", held)
    return seen


async def test_the_archive_check_runs_off_the_event_loop_so_healthz_answers_during_a_10_mib_push(
    running_server: RunningServer, tmp_path: Path, check_in_progress: dict[str, Any]
) -> None:
    seen = check_in_progress
    directory = write_template(tmp_path / "big", ECHO)
    (directory / "blob.bin").write_bytes(os.urandom(MAX_TEMPLATE_BYTES - 64 * 1024))
    archive = pack_directory(directory)
    assert len(archive) > 9.9 * 1024 * 1024
    async with running_server.client() as client:
        pushing = asyncio.create_task(_post_archive(client, "big", archive))
        await wait_for(lambda: seen["started"].is_set(), what="the archive check to start")
        # Were the check on the event loop, /healthz could only answer once it had finished.
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert not seen["done"]
        seen["release"].set()
        pushed = await pushing
        assert pushed.status_code == 201, pushed.text
        assert seen["done"]
        assert seen["thread"] is not threading.main_thread()


# -- numbers and JSON bodies -------------------------------------------------------------------------------


async def test_a_5000_digit_number_or_a_5000_deep_body_is_a_400_naming_the_field(
    running_server: RunningServer, tmp_path: Path
) -> None:
    huge = "1" * 5000
    async with running_server.client() as client:
        assert (await push(client, tmp_path, "num", NUMBER_TEMPLATE)).status_code == 201
        await wait_imported(client, "num", "v1")
        for body in (
            {"name": "ws", "template": "num", "parameters": {"cpu": huge}},
            {"name": "ws", "template": "num", "preset": "small", "parameters": {"cpu": huge}},  # a claim
            {"name": "ws", "template": "num", "parameters": {"cpu": "1e999"}},
        ):
            refused = await client.post(f"{API}/workspaces", json=body)
            assert refused.status_code == 400, refused.text
            assert refused.json()["message"].startswith("parameter `cpu`: number out of range"), refused.text
            assert len(refused.json()["message"]) < 200

        created = await client.post(f"{API}/workspaces", json={"name": "ws", "template": "num"})
        assert created.status_code == 201, created.text
        workspace = created.json()["id"]
        await wait_build(client, workspace, 1)
        rebuild = await client.post(
            f"{API}/workspaces/{workspace}/builds", json={"transition": "start", "parameters": {"cpu": huge}}
        )
        assert rebuild.status_code == 400, rebuild.text
        assert "parameter `cpu`: number out of range" in rebuild.json()["message"]

        for raw, message in (
            (
                '{"name": "ws2", "template": "num", "parameters": {"cpu": ' + huge + "}}",
                "invalid JSON body: a number has more than 4300 digits",
            ),
            (
                '{"name": "ws2", "template": "num", "parameters": {"cpu": ' + "[" * 5000 + "]" * 5000 + "}}",
                "invalid JSON body: nested too deeply",
            ),
        ):
            refused = await client.post(
                f"{API}/workspaces", content=raw, headers={"Content-Type": "application/json"}
            )
            assert refused.status_code == 400, refused.text
            assert refused.json()["message"] == message


# -- daemon log posts --------------------------------------------------------------------------------------


async def _log_text(client: httpx.AsyncClient, build_id: str) -> str:
    lines = (await client.get(f"{API}/builds/{build_id}/logs")).json()
    return "\n".join(line["output"] for line in lines)


async def _build_prints_nul_and_succeeds(client: httpx.AsyncClient, name: str) -> None:
    created = await client.post(f"{API}/workspaces", json={"name": name, "template": "nul"})
    assert created.status_code == 201, created.text
    build = await wait_build(client, created.json()["id"], 1)
    assert build["status"] == "succeeded", build
    assert "before\ufffdafter" in await _log_text(client, build["id"])


async def test_an_embedded_daemon_whose_build_prints_nul_bytes_keeps_the_log_and_takes_the_next_job(
    running_server: RunningServer, tmp_path: Path
) -> None:
    async with running_server.client() as client:
        assert (await push(client, tmp_path, "nul", NUL_TEMPLATE, NUL_FILES)).status_code == 201
        assert (await wait_imported(client, "nul", "v1"))["import_status"] == "succeeded"
        await _build_prints_nul_and_succeeds(client, "first")
        await _build_prints_nul_and_succeeds(client, "second")


async def test_log_posts_with_an_unknown_level_are_400s_nul_bytes_are_kept_and_the_standalone_daemon_lives_on(
    idle_server: RunningServer, tmp_path: Path
) -> None:
    async with idle_server.client() as client:
        key = await client.post(f"{API}/provisioner-keys", json={"name": "builder"})
        assert key.status_code == 201, key.text
        secret = key.json()["secret"]
        pushed = await push(client, tmp_path, "nul", NUL_TEMPLATE, NUL_FILES)
        assert pushed.status_code == 201
        job_id = pushed.json()["job_id"]

        # As a daemon over HTTP: take the import job, post bad lines, then finish it.
        async with httpx.AsyncClient(
            base_url=f"{idle_server.url}{API}/provisioner/daemon",
            headers={"Authorization": f"Bearer {secret}"},
            timeout=30,
        ) as daemon:
            acquired = await daemon.post("/acquire", json={"worker_id": "w", "kinds": ["exec"]})
            assert acquired.status_code == 200 and acquired.json()["id"] == job_id, acquired.text
            unknown = await daemon.post(
                f"/jobs/{job_id}/logs",
                json={"worker_id": "w", "lines": [{"level": "fatal", "stage": "s", "output": "x"}]},
            )
            assert unknown.status_code == 400, unknown.text
            assert unknown.json()["detail"][0]["field"] == "lines.0.level"
            assert "'trace', 'debug', 'info', 'warn' or 'error'" in unknown.json()["message"]
            nul = await daemon.post(
                f"/jobs/{job_id}/logs",
                json={
                    "worker_id": "w",
                    "lines": [{"level": "info", "stage": "a\u0000b", "output": "c\u0000d"}],
                },
            )
            assert nul.status_code == 204, nul.text
            surrogate = await daemon.post(
                f"/jobs/{job_id}/logs",
                content='{"worker_id": "w", "lines": [{"level": "info", "stage": "s", "output": "e\\ud800f"}]}',
                headers={"Content-Type": "application/json"},
            )
            assert surrogate.status_code == 204, surrogate.text
            overflowing = await daemon.post(
                f"/jobs/{job_id}/complete",
                content='{"worker_id": "w", "outcome": {"parameters": [{"name": "n", "type": "number", '
                '"validation_min": 1' + "0" * 400 + "}]}}",
                headers={"Content-Type": "application/json"},
            )
            assert overflowing.status_code == 400, overflowing.text
            assert overflowing.json()["detail"][0]["field"] == "outcome.parameters.0"
            assert "validation_min: must be a finite number" in overflowing.json()["message"]
            done = await daemon.post(f"/jobs/{job_id}/complete", json={"worker_id": "w", "outcome": {}})
            assert done.status_code == 200 and done.json() == {"accepted": True}, done.text
        logs = (await client.get(f"{API}/templates/nul/versions/v1/logs")).json()
        assert [(line["stage"], line["output"]) for line in logs] == [
            ("a\ufffdb", "c\ufffdd"),
            ("s", "e\ufffdf"),
        ]

        # A real standalone daemon whose builds print NUL bytes: each build succeeds and it takes the next.
        daemon = await start_daemon(idle_server.url, secret, tmp_path / "daemon")
        try:
            await _build_prints_nul_and_succeeds(client, "first")
            await _build_prints_nul_and_succeeds(client, "second")
            assert daemon.proc.returncode is None, daemon.stderr
        finally:
            await daemon.kill()


def test_the_api_accepts_the_log_levels_the_database_stores() -> None:
    assert get_args(LogLevel) == LOG_LEVELS
    assert storable_log_text("a\x00b\ud800c") == "a\ufffdb\ufffdc"
    assert storable_log_text("plain é") == "plain é"
