"""Helpers for the tests of deploy/: the tools that check the files (skip locally, fail under CI), the real
CLI's parser for the command lines the units and manifests run, and the files themselves."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def require_tool(name: str, why: str) -> str:
    """The tool's path; skips the test without it, and fails it under CI=true (.ci/run installs it)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} not found: CI=true requires {why} (.ci/run installs it)")
        pytest.skip(f"{name} not found: {why} is skipped")
    return path


def parse_command(argv: list[str]) -> tuple[Any, dict[str, Any]]:
    """``prebuildd ARGV`` parsed by the real CLI without running it: the leaf command and its parameters.

    A flag the command does not have, or a value its type refuses, raises as it would on the command line."""
    from prebuildd.cli import app

    command: Any = typer.main.get_command(app)
    args = list(argv)
    parent = None
    name = "prebuildd"
    while getattr(command, "get_command", None) is not None:  # a group: its first argument names the next
        if not args:
            raise ValueError(f"prebuildd {' '.join(argv)}: no command")
        parent = command.make_context(name, [], parent=parent, resilient_parsing=True)
        name = args.pop(0)
        sub = command.get_command(parent, name)
        if sub is None:
            raise ValueError(f"prebuildd {' '.join(argv)}: no command {name!r}")
        command = sub
    context = command.make_context(name, args, parent=parent)
    return command, dict(context.params)


def command_envvars(command: Any) -> set[str]:
    """The variables a command's options read (click's ``envvar``)."""
    names: set[str] = set()
    for param in command.params:
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            names.add(envvar)
        elif envvar:
            names.update(envvar)
    return names


def walk(value: Any) -> Iterator[Any]:
    """Every dict and list inside a parsed YAML document, depth first."""
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)
