-- API tokens and provisioner keys, stored as SHA-256 hashes of their secrets.

-- name: insert_token
-- Creates an API token (its secret is never stored).
INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, expires_at)
VALUES (%(id)s, %(user_id)s, %(name)s, %(token_hash)s, %(now)s, %(expires_at)s)
RETURNING id, user_id, name, created_at, expires_at, last_used_at, revoked_at;

-- name: user_by_token
-- The active user behind a token hash, with the token's id and last use (unknown, revoked, expired: none).
-- Also the user's live memberships (as identity.memberships_of_user orders them) and, for the site owner, the
-- default organization: what a request without an organization header acts in, without another round trip.
SELECT u.id, u.username, u.email, '' AS role, u.is_system, u.suspended, u.created_at, u.updated_at,
       u.site_owner, NULL::uuid AS organization_id, t.id AS token_id, t.last_used_at AS token_last_used_at,
       (SELECT coalesce(json_agg(json_build_object(
                   'id', o.id, 'name', o.name, 'display_name', o.display_name, 'is_default', o.is_default,
                   'created_at', o.created_at, 'role', m.role) ORDER BY m.created_at, o.name), '[]'::json)
        FROM organization_members m JOIN organizations o ON o.id = m.organization_id AND o.deleted_at IS NULL
        WHERE m.user_id = u.id) AS memberships,
       (SELECT json_build_object(
                   'id', o.id, 'name', o.name, 'display_name', o.display_name, 'is_default', o.is_default,
                   'created_at', o.created_at)
        FROM organizations o WHERE u.site_owner AND o.is_default AND o.deleted_at IS NULL LIMIT 1)
           AS default_organization
FROM api_tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_hash = %(token_hash)s
  AND t.revoked_at IS NULL
  AND (t.expires_at IS NULL OR t.expires_at > %(now)s)
  AND NOT u.suspended AND NOT u.is_system;

-- name: touch_token
-- Records a token's use unless one at or after %(since)s is recorded: concurrent requests write it once, not each.
UPDATE api_tokens SET last_used_at = %(now)s
WHERE id = %(id)s AND (last_used_at IS NULL OR last_used_at < %(since)s);

-- name: tokens_of_user
-- A user's tokens, revoked and expired ones too, oldest first.
SELECT id, user_id, name, created_at, expires_at, last_used_at, revoked_at
FROM api_tokens WHERE user_id = %(user_id)s ORDER BY created_at;

-- name: token_holder
-- Whose active token this is (to decide whether the caller may revoke it).
SELECT user_id FROM api_tokens WHERE id = %(id)s AND revoked_at IS NULL;

-- name: revoke_token
-- Revokes an active token of the given user; no row when there is none.
UPDATE api_tokens SET revoked_at = %(now)s
WHERE id = %(id)s AND user_id = %(user_id)s AND revoked_at IS NULL
RETURNING id;

-- name: insert_provisioner_key
-- Creates a provisioner key (its secret is never stored).
INSERT INTO provisioner_keys (id, organization_id, name, key_hash, tags, created_at)
VALUES (%(id)s, %(organization_id)s, %(name)s, %(key_hash)s, %(tags)s, %(now)s)
RETURNING id, organization_id, name, tags, created_at, revoked_at;

-- name: provisioner_key_by_hash
-- The active key behind a key hash.
SELECT id, organization_id, name, tags, created_at, revoked_at FROM provisioner_keys
WHERE key_hash = %(key_hash)s AND revoked_at IS NULL;

-- name: provisioner_keys
-- An organization's keys (or the site-wide ones, for a null organization), revoked ones too, oldest first.
SELECT id, organization_id, name, tags, created_at, revoked_at FROM provisioner_keys
WHERE organization_id IS NOT DISTINCT FROM %(organization_id)s::uuid ORDER BY created_at;

-- name: revoke_provisioner_key
-- Revokes an active key named by id or name; no row when there is none.
UPDATE provisioner_keys SET revoked_at = %(now)s
WHERE organization_id IS NOT DISTINCT FROM %(organization_id)s::uuid AND (id::text = %(key)s OR lower(name) = lower(%(key)s))
  AND revoked_at IS NULL
RETURNING id;

-- name: provisioner_key_active
-- A long poll checks its key again while it waits, so that a revoked key stops its daemon promptly.
SELECT id FROM provisioner_keys WHERE id = %(id)s AND revoked_at IS NULL;

-- name: job_organization
-- The organization of a job: a key may only touch its own organization's jobs.
SELECT organization_id FROM provisioner_jobs WHERE id = %(id)s;
