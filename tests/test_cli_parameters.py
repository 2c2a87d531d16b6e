"""`--param NAME=VALUE` values beyond ``domain.limits`` are a usage error of the CLI, before any request."""

from __future__ import annotations

import pytest
import typer

from prebuildd.cli.cmd_workspaces import _parameters
from prebuildd.domain import limits


def test_the_cli_refuses_the_sizes_the_server_refuses() -> None:
    value = limits.PARAMETER_VALUE.maximum
    assert _parameters([f"blob={'x' * value}"]) == {"blob": "x" * value}
    with pytest.raises(typer.BadParameter, match=f"parameter `blob`: value too large: {value + 1} bytes"):
        _parameters([f"blob={'x' * (value + 1)}"])
    many = [f"p{i}={'x' * (value - 10)}" for i in range(limits.PARAMETER_VALUES_TOTAL.maximum // value + 1)]
    with pytest.raises(typer.BadParameter, match="too large together"):
        _parameters(many)
