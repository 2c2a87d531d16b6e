"""Masks prebuildd's own secrets (API tokens, provisioner keys, agent tokens) in script output before a page shows
it: a script that echoes its agent token must not put that token on a screen."""

from __future__ import annotations

import re

from prebuildd.domain.secrets import AGENT_TOKEN_PREFIX, KEY_PREFIX, TOKEN_PREFIX

MASK = "[redacted]"

# new_secret() is the prefix plus 43 url-safe characters; shorter runs are matched too (a line cut mid-token).
_SECRET = re.compile(
    "(?:"
    + "|".join(re.escape(p) for p in (TOKEN_PREFIX, KEY_PREFIX, AGENT_TOKEN_PREFIX))
    + r")[A-Za-z0-9_-]{8,}"
)


def mask_secrets(text: str) -> str:
    """``text`` with every prebuildd token, key or agent token replaced by ``[redacted]``."""
    return _SECRET.sub(MASK, text)
