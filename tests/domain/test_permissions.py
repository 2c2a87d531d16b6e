"""The permission table: every action has a least role, the site owner may all, and build error text is hidden
from members wherever a reason embeds it."""

from __future__ import annotations

from prebuildd.domain.failures import ERROR_HIDDEN, redact_errors
from prebuildd.domain.permissions import LEAST_ROLE, ROLES, SITE, Action, allows


def test_every_action_has_a_least_role_and_roles_are_ordered() -> None:
    assert set(LEAST_ROLE) == set(Action)
    for action, least in LEAST_ROLE.items():
        assert allows("", action, site_owner=True)  # the site owner may everything, member or not
        assert not allows("", action)  # no membership: nothing
        granted = [role for role in reversed(ROLES) if allows(role, action)]  # member, template-admin, owner
        if least == SITE:
            assert granted == [], action
        else:
            assert granted == list(reversed(ROLES))[list(reversed(ROLES)).index(least) :], action


def test_outputs_and_site_actions() -> None:
    assert allows("template-admin", Action.OUTPUTS_READ) and not allows("member", Action.OUTPUTS_READ)
    assert allows("member", Action.PREBUILDS_READ)
    for action in (Action.ORGS_MANAGE, Action.KEYS_SITE_WIDE, Action.RECONCILIATION_PAUSE):
        assert not allows("owner", action)


def test_error_text_is_hidden_where_reasons_embed_it() -> None:
    secret = "DB_PASSWORD=hunter2\nline two"
    hard = f"hard-limited: last 3 creations failed: {secret}"
    assert redact_errors(hard) == f"hard-limited: last 3 creations failed: {ERROR_HIDDEN}"
    backoff = f"backing off until 2026-01-01 00:00:00Z (2 infrastructure failures, last: {secret})"
    assert redact_errors(backoff) == (
        f"backing off until 2026-01-01 00:00:00Z (2 infrastructure failures, last: {ERROR_HIDDEN})"
    )
    decision = f"want 2 more; {hard}"
    assert "hunter2" not in redact_errors(decision)
    # a known error elsewhere in a text is removed too; a text without one is unchanged
    assert redact_errors(f"odd: {secret} here", [secret]) == f"odd: {ERROR_HIDDEN} here"
    assert redact_errors("healthy: 3 of 3 ready") == "healthy: 3 of 3 ready"
