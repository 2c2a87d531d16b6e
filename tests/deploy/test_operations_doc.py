"""docs/operations.md names real commands: every `prebuildd …` command line in it (code spans and blocks) is a
command of the CLI, with options that command has. Placeholders (TEMPLATE, ID, …) are not checked."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import typer

from tests.support.deploy import REPO

GUIDE = REPO / "docs" / "operations.md"


def _command_lines() -> list[str]:
    text = GUIDE.read_text()
    snippets = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S) + re.findall(r"`([^`\n]+)`", text)
    lines = []
    for snippet in snippets:
        for line in snippet.splitlines():
            # A command starts the line or follows a shell separator (`kubectl -n prebuildd …` is not one).
            for match in re.finditer(r"(?:^\s*|(?:&&|;|\|)\s*)(prebuildd\s+[a-z][^#;&|)`]*)", line):
                lines.append(match.group(1).strip())
    return sorted(set(lines))


def _resolve(words: list[str]) -> tuple[tuple[str, ...], Any, list[str]]:
    """The command path the words name, the click command, and the words left for it."""
    from prebuildd.cli import app

    command: Any = typer.main.get_command(app)
    path: list[str] = []
    context = command.make_context("prebuildd", [], resilient_parsing=True)
    while getattr(command, "get_command", None) is not None and words and not words[0].startswith("-"):
        sub = command.get_command(context, words[0])
        if sub is None:
            break
        path.append(words.pop(0))
        command = sub
        context = command.make_context(path[-1], [], parent=context, resilient_parsing=True)
    return tuple(path), command, words


def _options(command: Any) -> set[str]:
    names: set[str] = {"--help", "-h"}
    for param in command.params:
        names.update(getattr(param, "opts", ()))
        names.update(getattr(param, "secondary_opts", ()))
    return names


def test_the_guide_shows_commands() -> None:
    lines = _command_lines()
    assert len(lines) > 20, lines
    assert "prebuildd prebuilds explain TEMPLATE PRESET" in lines


@pytest.mark.parametrize("line", _command_lines())
def test_every_command_line_of_the_guide_is_a_real_command(line: str) -> None:
    words = shlex.split(line.replace("…", "x").replace("[", " ").replace("]", " "))[1:]
    path, command, rest = _resolve(list(words))
    if getattr(command, "get_command", None) is not None:  # stopped at a group: the next word is no command
        pytest.fail(f"`{line}`: {' '.join(['prebuildd', *path])} has no command {rest[:1]}")
    known = _options(command)
    for word in rest:
        if not word.startswith("--"):
            continue
        option = word.split("=", 1)[0]
        assert option in known, f"`{line}`: prebuildd {' '.join(path)} has no option {option}"


def test_the_check_catches_a_wrong_command_and_a_wrong_option() -> None:
    path, command, rest = _resolve(["prebuilds", "explian", "t", "p"])
    assert path == ("prebuilds",) and rest[0] == "explian"
    path, command, _ = _resolve(["jobs", "list", "--state", "pending"])
    assert path == ("jobs", "list") and "--state" not in _options(command) and "--status" in _options(command)
