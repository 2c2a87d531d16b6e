"""`prebuildd provisioner …`: keys and standalone daemons."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
