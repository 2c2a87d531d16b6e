-- name: default_organization
SELECT * FROM organizations WHERE is_default;

-- name: insert_organization
INSERT INTO organizations (id, name, display_name, is_default, created_at)
VALUES (%(id)s, %(name)s, %(display_name)s, %(is_default)s, %(now)s)
RETURNING *;

-- name: insert_user
INSERT INTO users (id, username, email, role, created_at, updated_at)
VALUES (%(id)s, %(username)s, %(email)s, %(role)s, %(now)s, %(now)s)
RETURNING *;

-- name: add_member
INSERT INTO organization_members (organization_id, user_id, created_at)
VALUES (%(organization_id)s, %(user_id)s, %(now)s)
ON CONFLICT DO NOTHING;

-- name: user_by_name
SELECT * FROM users WHERE lower(username) = lower(%(username)s);

-- name: first_owner
SELECT * FROM users WHERE role = 'owner' AND NOT is_system ORDER BY created_at LIMIT 1;
