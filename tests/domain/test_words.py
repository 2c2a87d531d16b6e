"""The one pluralising helper: a count and the noun agreeing with it."""

from __future__ import annotations

import pytest

from prebuildd.domain.words import noun, plural


@pytest.mark.parametrize(
    ("count", "singular", "expected"),
    [
        (0, "instance", "0 instances"),
        (1, "instance", "1 instance"),
        (2, "instance", "2 instances"),
        (1, "failed build", "1 failed build"),
        (3, "failed build", "3 failed builds"),
        (-1, "instance", "-1 instances"),
    ],
)
def test_plural(count: int, singular: str, expected: str) -> None:
    assert plural(count, singular) == expected


def test_irregular_and_given_plurals() -> None:
    assert plural(2, "entry", "entries") == "2 entries"
    assert plural(1, "entry", "entries") == "1 entry"
    assert (noun(1, "was"), noun(2, "was"), noun(2, "is"), noun(2, "has")) == ("was", "were", "are", "have")
