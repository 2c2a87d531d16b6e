-- Organizations, users and memberships. A user's columns are always selected in the order of
-- ``store.identity.User``'s fields, so rows build the dataclass directly.

-- name: default_organization
-- The organization new users join when none is named.
SELECT id, name, display_name, is_default, created_at FROM organizations WHERE is_default;

-- name: insert_organization
-- Creates an organization (the default one, on first start).
INSERT INTO organizations (id, name, display_name, is_default, created_at)
VALUES (%(id)s, %(name)s, %(display_name)s, %(is_default)s, %(now)s)
RETURNING id, name, display_name, is_default, created_at;

-- name: insert_user
-- Creates a user (memberships are added apart).
INSERT INTO users (id, username, email, role, created_at, updated_at)
VALUES (%(id)s, %(username)s, %(email)s, %(role)s, %(now)s, %(now)s)
RETURNING id, username, email, role, is_system, suspended, created_at, updated_at;

-- name: add_member
-- Makes a user a member of an organization (idempotent).
INSERT INTO organization_members (organization_id, user_id, created_at)
VALUES (%(organization_id)s, %(user_id)s, %(now)s)
ON CONFLICT DO NOTHING;

-- name: user_by_name
-- A user by name, case-insensitively (the system user too: callers decide whether it may be seen).
SELECT id, username, email, role, is_system, suspended, created_at, updated_at
FROM users WHERE lower(username) = lower(%(username)s);

-- name: delete_user
-- Removes a user with its memberships and tokens (a first start's owner, when that start failed).
DELETE FROM users WHERE id = %(id)s AND NOT is_system;

-- name: first_owner
-- The oldest real owner: whether the first start has created one, and who owns the demo template.
SELECT id, username, email, role, is_system, suspended, created_at, updated_at
FROM users WHERE role = 'owner' AND NOT is_system ORDER BY created_at LIMIT 1;

-- name: users
-- Every real user, by name.
SELECT id, username, email, role, is_system, suspended, created_at, updated_at
FROM users WHERE NOT is_system ORDER BY lower(username);

-- name: lock_active_owners
-- Taken before a role or suspension change, so that two concurrent changes cannot leave no active owner.
SELECT id FROM users WHERE role = 'owner' AND NOT suspended AND NOT is_system ORDER BY id FOR UPDATE;

-- name: active_owner_count
-- How many owners can still administer the server.
SELECT count(*) AS n FROM users WHERE role = 'owner' AND NOT suspended AND NOT is_system;

-- name: update_user
-- Changes a user's role and/or suspension (a null keeps the current value); never the system user.
UPDATE users
SET role = coalesce(%(role)s::text, role), suspended = coalesce(%(suspended)s::boolean, suspended),
    updated_at = %(now)s
WHERE id = %(id)s AND NOT is_system
RETURNING id, username, email, role, is_system, suspended, created_at, updated_at;

