"""Fixed identities every replica agrees on."""

from __future__ import annotations

from uuid import UUID

from prebuildd.domain.permissions import ROLES

__all__ = ["PREBUILDS_USER_ID", "ROLES"]

PREBUILDS_USER_ID = UUID("00000000-0000-4000-8000-0000000b01d0")
"""The built-in user that owns unclaimed prebuilds (inserted by the first migration)."""
