"""The CLI run in-process against recorded API answers: for rendering tests (golden output at a fixed width),
where the answer, not the server, is under test. The commands, options and exit codes are the real ones."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from prebuildd.cli import app, client, output

Answer = Any | Callable[[httpx.Request], httpx.Response]


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def run_cli(
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    answers: Mapping[str, Answer],
    *,
    columns: int = 80,
    now: datetime | None = None,
    env: Mapping[str, str] | None = None,
) -> Ran:
    """Run `prebuildd ARGS` with ``answers`` ({"GET /prebuilds/status": json, ...}, paths below /api/v1) as the
    server; any other request is answered 404 with the API's error body."""

    def handle(request: httpx.Request) -> httpx.Response:
        key = f"{request.method} {request.url.path.removeprefix(client.API_PREFIX)}"
        answer = answers.get(key)
        if answer is None:
            return httpx.Response(
                404, json={"code": "not_found", "message": f"{key} not found", "detail": None}
            )
        if callable(answer):
            return answer(request)
        return httpx.Response(200, content=json.dumps(answer), headers={"content-type": "application/json"})

    transport = httpx.MockTransport(handle)
    monkeypatch.setattr(client, "ApiClient", functools.partial(client.ApiClient, transport=transport))
    if now is not None:
        monkeypatch.setattr(output, "_now", lambda: now)
    base = {
        "COLUMNS": str(columns),
        "PREBUILDD_CONFIG_DIR": "/nonexistent/prebuildd-test-config",
        "PREBUILDD_URL": "http://prebuildd.test",
        "PREBUILDD_TOKEN": "pbt_test",
    }
    result = CliRunner().invoke(app, args, env={**base, "NO_COLOR": None, "FORCE_COLOR": None, **(env or {})})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)
