"""Secrets prebuildd hands out (API tokens, provisioner keys, agent tokens): random, shown once, stored as hashes."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "pbt_"
KEY_PREFIX = "pbk_"
AGENT_TOKEN_PREFIX = "pba_"


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()
