"""The named queries: every block says in one line what it is for, and the loader refuses a name defined twice."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from prebuildd.store.sql import parse_queries, q

_BLOCK = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for entry in resources.files("prebuildd.store").joinpath("queries").iterdir():
        if entry.name.endswith(".sql"):
            parts = _BLOCK.split(entry.read_text())
            found += [
                (f"{entry.name}:{name}", body) for name, body in zip(parts[1::2], parts[2::2], strict=True)
            ]
    return found


BLOCKS = _blocks()


@pytest.mark.parametrize(("name", "body"), BLOCKS, ids=[name for name, _ in BLOCKS])
def test_every_query_starts_with_a_description(name: str, body: str) -> None:
    first = body.strip().splitlines()[0]
    assert first.startswith("-- ") and len(first) > 10, f"{name}: the line under `-- name:` must describe it"


def test_a_query_named_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        parse_queries("-- name: a\n-- one\nSELECT 1;\n-- name: a\n-- two\nSELECT 2;\n", "x.sql")


def test_an_unknown_query_names_the_folder() -> None:
    with pytest.raises(KeyError, match=r"no query named 'x\.nope'"):
        q("x.nope")
