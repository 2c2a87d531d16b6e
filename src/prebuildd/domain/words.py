"""Counted nouns in the words prebuildd prints ("1 instance", "2 instances"): the one pluralising helper that
messages, the CLI and status texts share."""

from __future__ import annotations

_IRREGULAR = {"was": "were", "is": "are", "has": "have", "this": "these"}


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``count`` and the noun agreeing with it: ``plural(1, "instance")`` is '1 instance', 0 and 2+ take the plural
    (``singular`` + 's' unless ``plural_form`` is given)."""
    return f"{count} {noun(count, singular, plural_form)}"


def noun(count: int, singular: str, plural_form: str | None = None) -> str:
    """The noun (or verb) alone, agreeing with ``count``: ``noun(2, "was")`` is 'were'."""
    if count == 1:
        return singular
    if plural_form is not None:
        return plural_form
    return _IRREGULAR.get(singular, f"{singular}s")
