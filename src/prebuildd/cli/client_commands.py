"""Client commands (login, templates, presets, workspaces, users, tokens): filled in by the CLI work."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
