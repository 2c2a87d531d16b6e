"""Who may do what: the one table of actions and the least role each needs in the organization acted in.

Roles belong to a membership (a user has one role per organization). The site owner acts as an owner in every
organization and is the only one who may do the site actions (organizations, site-wide keys, the global pause).
Routes and services ask ``allows``; nothing else compares roles, so this table is the whole policy.
"""

from __future__ import annotations

from enum import StrEnum

ROLES = ("owner", "template-admin", "member")

ROLE_RANK = {"member": 0, "template-admin": 1, "owner": 2}
"""Each role may do what the roles below it may."""

SITE = "site-owner"
"""Not a membership role: the actions only the site owner may do."""


class Action(StrEnum):
    # templates and pools
    TEMPLATE_READ = "template.read"
    TEMPLATE_WRITE = "template.write"
    """Push, activate, deprecate, delete a template; change a preset's pool."""
    PREBUILDS_READ = "prebuilds.read"
    """Pool counts and statuses, without error text."""
    PREBUILDS_OPERATE = "prebuilds.operate"
    """Invalidate, retry, cleanup."""
    RECONCILIATION_PAUSE = "reconciliation.pause"
    # outputs (least privilege: script output can hold secrets)
    OUTPUTS_READ = "outputs.read"
    """Error tails, build logs and outputs of anyone's workspace or prebuild, import logs."""
    # workspaces and jobs
    WORKSPACE_CREATE = "workspace.create"
    WORKSPACE_ANYONES = "workspace.anyones"
    """See and act on other users' workspaces, create workspaces for them."""
    JOBS_READ = "jobs.read"
    JOBS_MANAGE = "jobs.manage"
    """Cancel anyone's job (everyone may cancel the jobs they started)."""
    # users, memberships and tokens
    USERS_READ = "users.read"
    USERS_MANAGE = "users.manage"
    """Create users in the organization, change their role there, suspend them, add and remove members."""
    TOKENS_FOR_OTHERS = "tokens.for_others"
    """Create or revoke another user's tokens (who must be administered by the caller, see ``identity``)."""
    KEYS_MANAGE = "keys.manage"
    KEYS_SITE_WIDE = "keys.site_wide"
    # organizations
    ORGS_MANAGE = "orgs.manage"
    """Create, rename and delete organizations; see every organization."""


LEAST_ROLE: dict[Action, str] = {
    Action.TEMPLATE_READ: "member",
    Action.TEMPLATE_WRITE: "template-admin",
    Action.PREBUILDS_READ: "member",
    Action.PREBUILDS_OPERATE: "template-admin",
    Action.RECONCILIATION_PAUSE: SITE,
    Action.OUTPUTS_READ: "template-admin",
    Action.WORKSPACE_CREATE: "member",
    Action.WORKSPACE_ANYONES: "template-admin",
    Action.JOBS_READ: "template-admin",
    Action.JOBS_MANAGE: "template-admin",
    Action.USERS_READ: "template-admin",
    Action.USERS_MANAGE: "owner",
    Action.TOKENS_FOR_OTHERS: "owner",
    Action.KEYS_MANAGE: "owner",
    Action.KEYS_SITE_WIDE: SITE,
    Action.ORGS_MANAGE: SITE,
}
"""The least role each action needs in the organization acted in (``SITE``: the site owner only)."""


def allows(role: str, action: Action, *, site_owner: bool = False) -> bool:
    """Whether a member with ``role`` (empty: not a member) may do ``action``."""
    needed = LEAST_ROLE[action]
    if site_owner:
        return True
    if needed == SITE or role not in ROLE_RANK:
        return False
    return ROLE_RANK[role] >= ROLE_RANK[needed]


def has_rank(role: str, least: str) -> bool:
    """Whether ``role`` is ``least`` or above it (an empty role: no membership, below every role)."""
    return role in ROLE_RANK and ROLE_RANK[role] >= ROLE_RANK[least]
