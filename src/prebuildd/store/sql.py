"""Loads the named queries of `queries/*.sql` once; each block starts with a `-- name: <query>` line."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import LiteralString

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse_queries(text: str, source: str) -> dict[str, str]:
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{source}: query {name!r} is defined twice")
        queries[name] = body.strip().rstrip(";")
    return queries


@cache
def _all() -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in resources.files("prebuildd.store").joinpath("queries").iterdir():
        if entry.name.endswith(".sql"):
            module = entry.name.removesuffix(".sql")
            for name, body in parse_queries(entry.read_text(), entry.name).items():
                found[f"{module}.{name}"] = body
    return found


def q(name: str) -> LiteralString:
    """The SQL of query ``<file>.<name>``; the text comes from a file of the package, never from input."""
    try:
        return _all()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in prebuildd/store/queries") from None
