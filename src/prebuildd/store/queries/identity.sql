-- Organizations, users and memberships. A user's columns are always selected in the order of
-- ``store.identity.User``'s fields, so rows build the dataclass directly: ``role`` and ``organization_id`` are
-- the user's membership in the organization the query is about (empty and null when it is about none).

-- name: default_organization
-- The organization new users join when none is named.
SELECT id, name, display_name, is_default, created_at FROM organizations WHERE is_default AND deleted_at IS NULL;

-- name: insert_organization
-- Creates an organization (the default one, on first start).
INSERT INTO organizations (id, name, display_name, is_default, created_at)
VALUES (%(id)s, %(name)s, %(display_name)s, %(is_default)s, %(now)s)
RETURNING id, name, display_name, is_default, created_at;

-- name: organization_by_name
-- A live organization by name or id.
SELECT id, name, display_name, is_default, created_at FROM organizations
WHERE (name = lower(%(name)s) OR id::text = %(name)s) AND deleted_at IS NULL;

-- name: organizations
-- Every live organization, by name (the site owner's view).
SELECT id, name, display_name, is_default, created_at FROM organizations WHERE deleted_at IS NULL ORDER BY name;

-- name: memberships_of_user
-- The live organizations a user belongs to, with the role in each, oldest membership first.
SELECT o.id, o.name, o.display_name, o.is_default, o.created_at, m.role
FROM organization_members m JOIN organizations o ON o.id = m.organization_id AND o.deleted_at IS NULL
WHERE m.user_id = %(user_id)s
ORDER BY m.created_at, o.name;

-- name: update_organization
-- Renames an organization or changes its display name (a null keeps the value); no row when there is none.
UPDATE organizations
SET name = coalesce(%(new_name)s::text, name), display_name = coalesce(%(display_name)s::text, display_name)
WHERE id = %(id)s AND deleted_at IS NULL
RETURNING id, name, display_name, is_default, created_at;

-- name: organization_leftovers
-- What an organization still has that refuses its deletion: live templates and workspaces (prebuilds too).
SELECT 'template' AS kind, name FROM templates WHERE organization_id = %(id)s AND NOT deleted
UNION ALL
SELECT 'workspace' AS kind, name FROM workspaces WHERE organization_id = %(id)s AND NOT deleted
ORDER BY kind, name;

-- name: delete_organization
-- Marks an organization deleted; its memberships go, its keys are revoked (the caller checked leftovers).
WITH members AS (
    DELETE FROM organization_members WHERE organization_id = %(id)s
), keys AS (
    UPDATE provisioner_keys SET revoked_at = %(now)s WHERE organization_id = %(id)s AND revoked_at IS NULL
)
UPDATE organizations SET deleted_at = %(now)s WHERE id = %(id)s AND deleted_at IS NULL AND NOT is_default
RETURNING id;

-- name: insert_user
-- Creates a user (memberships are added apart).
INSERT INTO users (id, username, email, site_owner, created_at, updated_at)
VALUES (%(id)s, %(username)s, %(email)s, %(site_owner)s, %(now)s, %(now)s)
RETURNING id, username, email, '' AS role, is_system, suspended, created_at, updated_at, site_owner,
          NULL::uuid AS organization_id;

-- name: add_member
-- Makes a user a member of an organization with a role, or changes the role of a member.
INSERT INTO organization_members (organization_id, user_id, created_at, role)
VALUES (%(organization_id)s, %(user_id)s, %(now)s, %(role)s)
ON CONFLICT (organization_id, user_id) DO UPDATE SET role = excluded.role;

-- name: remove_member
-- Takes a user out of an organization; no row when they were not in it.
DELETE FROM organization_members WHERE organization_id = %(organization_id)s AND user_id = %(user_id)s
RETURNING user_id;

-- name: member_by_name
-- A member of the organization by name, case-insensitively, with their role there.
SELECT u.id, u.username, u.email, m.role, u.is_system, u.suspended, u.created_at, u.updated_at, u.site_owner,
       m.organization_id
FROM users u JOIN organization_members m ON m.user_id = u.id AND m.organization_id = %(organization_id)s
WHERE lower(u.username) = lower(%(username)s) AND NOT u.is_system;

-- name: user_by_name
-- A user by name in no organization's view (the system user too: callers decide whether it may be seen).
SELECT id, username, email, '' AS role, is_system, suspended, created_at, updated_at, site_owner,
       NULL::uuid AS organization_id
FROM users WHERE lower(username) = lower(%(username)s);

-- name: delete_user
-- Removes a user with its memberships and tokens (a first start's owner, when that start failed).
DELETE FROM users WHERE id = %(id)s AND NOT is_system;

-- name: first_owner
-- The oldest site owner: whether the first start has created one, and who owns the demo template.
SELECT id, username, email, 'owner' AS role, is_system, suspended, created_at, updated_at, site_owner,
       NULL::uuid AS organization_id
FROM users WHERE site_owner AND NOT is_system ORDER BY created_at LIMIT 1;

-- name: members
-- The members of an organization with their role there, by name.
SELECT u.id, u.username, u.email, m.role, u.is_system, u.suspended, u.created_at, u.updated_at, u.site_owner,
       m.organization_id
FROM users u JOIN organization_members m ON m.user_id = u.id AND m.organization_id = %(organization_id)s
WHERE NOT u.is_system ORDER BY lower(u.username);

-- name: lock_owners
-- Taken before a role, membership or suspension change, so that two concurrent changes cannot leave an
-- organization without an active owner, nor the site without an active site owner.
SELECT id FROM users WHERE (site_owner OR id IN (SELECT user_id FROM organization_members WHERE role = 'owner'))
  AND NOT suspended AND NOT is_system ORDER BY id FOR UPDATE;

-- name: orphaned_organizations
-- The organizations that had an active owner and now have none (after a change in this transaction).
SELECT o.name FROM organizations o
WHERE o.deleted_at IS NULL AND o.id = ANY(%(ids)s)
  AND NOT EXISTS (
      SELECT 1 FROM organization_members m JOIN users u ON u.id = m.user_id
      WHERE m.organization_id = o.id AND m.role = 'owner' AND NOT u.suspended
  )
ORDER BY o.name;

-- name: owned_organization_ids
-- The organizations where the user is an active owner.
SELECT m.organization_id FROM organization_members m JOIN users u ON u.id = m.user_id
WHERE m.user_id = %(user_id)s AND m.role = 'owner' AND NOT u.suspended;

-- name: active_site_owner_count
-- How many site owners can still administer the server.
SELECT count(*) AS n FROM users WHERE site_owner AND NOT suspended AND NOT is_system;

-- name: set_suspended
-- Suspends a user or lifts it (site-wide: their tokens stop working everywhere); never the system user.
UPDATE users SET suspended = %(suspended)s, updated_at = %(now)s
WHERE id = %(id)s AND NOT is_system
RETURNING id;

-- name: unadministered_memberships
-- How many of the target's organizations the actor is not an active owner of: an owner acts on a user's
-- tokens and suspension only when that user belongs to no organization beyond the owner's reach.
SELECT count(*) AS n FROM organization_members t
JOIN organizations o ON o.id = t.organization_id AND o.deleted_at IS NULL
WHERE t.user_id = %(target_id)s
  AND NOT EXISTS (
      SELECT 1 FROM organization_members a
      WHERE a.organization_id = t.organization_id AND a.user_id = %(actor_id)s AND a.role = 'owner'
  );
