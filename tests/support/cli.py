"""The client CLI as users run it: `python -m prebuildd ARGS` as an asyncio subprocess with its own config
directory (and, for users other than the owner, PREBUILDD_URL/PREBUILDD_TOKEN), so the server keeps serving."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLI_TIMEOUT = 60.0


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


@dataclass
class Cli:
    """Runs `python -m prebuildd ARGS` with a config directory of its own, and optionally a URL and token."""

    config_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    async def __call__(self, *args: str, stdin: bytes | None = None) -> Result:
        env = {name: value for name, value in os.environ.items() if not name.startswith("PREBUILDD_")}
        env |= {"PREBUILDD_CONFIG_DIR": str(self.config_dir), "COLUMNS": "200", **self.env}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "prebuildd",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(stdin), CLI_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        assert process.returncode is not None
        return Result(process.returncode, out.decode(), err.decode())

    async def ok(self, *args: str) -> Result:
        result = await self(*args)
        assert result.code == 0, f"prebuildd {' '.join(args)}: {result}"
        return result

    async def refused(self, *args: str) -> Result:
        result = await self(*args)
        assert result.code == 1, f"prebuildd {' '.join(args)} should fail: {result}"
        assert any(line.startswith("error: ") for line in result.err.splitlines()), result
        return result

    def as_user(self, url: str, token: str, config_dir: Path) -> Cli:
        return Cli(config_dir, {"PREBUILDD_URL": url, "PREBUILDD_TOKEN": token})
