"""Size limits (``domain.limits``): a parameter value, the values of one request together, names, descriptions
and daemon log posts beyond their limit are refused at once, 400 (413 for a log post too large as a whole),
naming the field and the limit; a 1 MB parameter no longer reaches a build to fail with "Argument list too
long"."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from prebuildd.domain import limits
from tests.support.api import API, push, wait_imported
from tests.support.server import RunningServer

TEMPLATE = """
provisioner = "exec"

[exec]
create = "create.sh"

[[parameters]]
name = "blob"

[[parameters]]
name = "other"
default = ""
"""
FILES = {"create.sh": "#!/bin/sh\necho made\n"}

VALUE = limits.PARAMETER_VALUE.maximum


def _refusal(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    message = str(response.json()["message"])
    for word in words:
        assert word in message, (word, message)
    return message


async def test_parameter_values_beyond_their_limits_are_400s(
    running_server: RunningServer, tmp_path: Path
) -> None:
    async with running_server.client() as client:
        assert (await push(client, tmp_path, "sized", TEMPLATE, FILES, activate=True)).status_code == 201
        await wait_imported(client, "sized", "v1")

        async def create(name: str, parameters: dict[str, object]) -> httpx.Response:
            body = {"name": name, "template": "sized", "parameters": parameters}
            return await client.post(f"{API}/workspaces", json=body)

        # The finding: a 1 MB value was accepted and failed later in the build.
        _refusal(
            await create("huge", {"blob": "x" * 1_000_000}), 400, "parameter `blob`", str(VALUE), "bytes"
        )
        # Bytes, not characters: 'é' is two bytes in UTF-8.
        _refusal(await create("wide", {"blob": "é" * (VALUE // 2 + 1)}), 400, "parameter `blob`", str(VALUE))
        _refusal(await create("list", {"blob": ["y" * VALUE]}), 400, "parameter `blob`")
        many = {
            f"p{i}": "z" * (VALUE - 10) for i in range(limits.PARAMETER_VALUES_TOTAL.maximum // VALUE + 1)
        }
        _refusal(
            await create("many", many), 400, "too large together", str(limits.PARAMETER_VALUES_TOTAL.maximum)
        )
        counted = {f"p{i}": "1" for i in range(limits.PARAMETER_COUNT.maximum + 1)}
        _refusal(await create("count", counted), 400, "parameters", str(limits.PARAMETER_COUNT.maximum))
        # A start of an existing workspace takes the same values: the same limit.
        made = await create("fits", {"blob": "x" * VALUE})
        assert made.status_code == 201, made.text
        start = await client.post(
            f"{API}/workspaces/{made.json()['id']}/builds",
            json={"transition": "start", "parameters": {"blob": "x" * (VALUE + 1)}},
        )
        _refusal(start, 400, "parameter `blob`", str(VALUE))


async def test_manifest_texts_and_preset_values_beyond_their_limits_are_400s(
    running_server: RunningServer, tmp_path: Path
) -> None:
    too_long = "d" * (limits.DESCRIPTION.maximum + 1)
    async with running_server.client() as client:
        described = await push(
            client, tmp_path, "described", f'provisioner = "echo"\ndescription = "{too_long}"\n'
        )
        _refusal(described, 400, "description", str(limits.DESCRIPTION.maximum))
        big = "v" * (VALUE + 1)
        preset = TEMPLATE + f'\n[[presets]]\nname = "big"\nparameters = {{ blob = "{big}" }}\n'
        _refusal(
            await push(client, tmp_path, "preset", preset, FILES),
            400,
            "presets[big].parameters.blob",
            str(VALUE),
        )
        named = TEMPLATE + f'\n[[presets]]\nname = "{"n" * (limits.NAME.maximum + 1)}"\n'
        _refusal(await push(client, tmp_path, "named", named, FILES), 400, "name", str(limits.NAME.maximum))


async def test_names_and_descriptions_beyond_their_limits_are_400s(running_server: RunningServer) -> None:
    async with running_server.client() as client:
        token = await client.post(f"{API}/tokens", json={"name": "t" * (limits.TOKEN_NAME.maximum + 1)})
        _refusal(token, 400, "name", str(limits.TOKEN_NAME.maximum))
        user = await client.post(f"{API}/users", json={"username": "u" * (limits.USERNAME.maximum + 1)})
        _refusal(user, 400, "username", str(limits.USERNAME.maximum))
        email = await client.post(
            f"{API}/users", json={"username": "ok", "email": "e" * (limits.SHORT_TEXT.maximum + 1)}
        )
        _refusal(email, 400, "email", str(limits.SHORT_TEXT.maximum))
        workspace = {"name": "w" * (limits.NAME.maximum + 1), "template": "any"}
        _refusal(
            await client.post(f"{API}/workspaces", json=workspace), 400, "name", str(limits.NAME.maximum)
        )
        message = await client.post(
            f"{API}/templates/any/versions",
            params={"message": "m" * (limits.DESCRIPTION.maximum + 1)},
            content=b"",
            headers={"Content-Type": "application/gzip"},
        )
        _refusal(message, 400, "message", str(limits.DESCRIPTION.maximum))


async def test_daemon_log_posts_beyond_their_limits_are_refused(idle_server: RunningServer) -> None:
    async with idle_server.client() as client:
        key = await client.post(f"{API}/provisioner-keys", json={"name": "builder"})
        assert key.status_code == 201, key.text
        secret = key.json()["secret"]
    job = uuid.uuid4()
    async with httpx.AsyncClient(
        base_url=f"{idle_server.url}{API}/provisioner/daemon",
        headers={"Authorization": f"Bearer {secret}"},
        timeout=60,
    ) as daemon:

        async def post(lines: list[dict[str, str]]) -> httpx.Response:
            return await daemon.post(f"/jobs/{job}/logs", json={"worker_id": "w", "lines": lines})

        line = {"level": "info", "stage": "apply", "output": "o" * (limits.LOG_LINE.maximum + 1)}
        _refusal(await post([line]), 400, "output", str(limits.LOG_LINE.maximum))
        short = {"level": "info", "stage": "apply", "output": "o"}
        _refusal(
            await post([short] * (limits.LOG_POST_LINES.maximum + 1)),
            400,
            "lines",
            str(limits.LOG_POST_LINES.maximum),
        )
        full = {"level": "info", "stage": "apply", "output": "o" * limits.LOG_LINE.maximum}
        count = limits.LOG_POST_TOTAL.maximum // limits.LOG_LINE.maximum + 1
        too_much = await post([full] * count)
        _refusal(too_much, 413, "log post too large", str(limits.LOG_POST_TOTAL.maximum))
        assert too_much.json()["code"] == "too_large"
        # Within every limit the post reaches the job check: an unknown job is a 404, not a size refusal.
        assert (await post([full] * (count - 1))).status_code == 404
