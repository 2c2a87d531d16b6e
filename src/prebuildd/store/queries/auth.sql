-- name: insert_token
INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, expires_at)
VALUES (%(id)s, %(user_id)s, %(name)s, %(token_hash)s, %(now)s, %(expires_at)s)
RETURNING id, user_id, name, created_at, expires_at, last_used_at, revoked_at;

-- name: user_by_token
SELECT u.*, t.id AS token_id, t.last_used_at AS token_last_used_at
FROM api_tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_hash = %(token_hash)s
  AND t.revoked_at IS NULL
  AND (t.expires_at IS NULL OR t.expires_at > %(now)s)
  AND NOT u.suspended AND NOT u.is_system;

-- name: touch_token
UPDATE api_tokens SET last_used_at = %(now)s WHERE id = %(id)s;

-- name: tokens_of_user
SELECT id, user_id, name, created_at, expires_at, last_used_at, revoked_at
FROM api_tokens WHERE user_id = %(user_id)s ORDER BY created_at;

-- name: revoke_token
UPDATE api_tokens SET revoked_at = %(now)s
WHERE id = %(id)s AND (user_id = %(user_id)s OR %(any_user)s) AND revoked_at IS NULL
RETURNING id;

-- name: insert_provisioner_key
INSERT INTO provisioner_keys (id, organization_id, name, key_hash, tags, created_at)
VALUES (%(id)s, %(organization_id)s, %(name)s, %(key_hash)s, %(tags)s, %(now)s)
RETURNING id, organization_id, name, tags, created_at, revoked_at;

-- name: provisioner_key_by_hash
SELECT id, organization_id, name, tags FROM provisioner_keys
WHERE key_hash = %(key_hash)s AND revoked_at IS NULL;

-- name: provisioner_keys
SELECT id, organization_id, name, tags, created_at, revoked_at FROM provisioner_keys
WHERE organization_id = %(organization_id)s ORDER BY created_at;

-- name: revoke_provisioner_key
UPDATE provisioner_keys SET revoked_at = %(now)s
WHERE organization_id = %(organization_id)s AND (id::text = %(key)s OR lower(name) = lower(%(key)s))
  AND revoked_at IS NULL
RETURNING id;

-- name: provisioner_key_active
-- A long poll checks its key again while it waits, so that a revoked key stops its daemon promptly.
SELECT id FROM provisioner_keys WHERE id = %(id)s AND revoked_at IS NULL;

-- name: organization_of_user
SELECT organization_id FROM organization_members WHERE user_id = %(user_id)s
ORDER BY created_at, organization_id LIMIT 1;

-- name: job_organization
SELECT organization_id FROM provisioner_jobs WHERE id = %(id)s;
