-- Dashboard sessions (``store.sessions``): opened at login, read on every page, ended at logout or expiry.

-- name: insert
-- Opens a session for a token; it ends at ``expires_at`` or when the token stops being active, whichever is first.
INSERT INTO dashboard_sessions (id_hash, token_id, organization_id, created_at, expires_at)
VALUES (%(id_hash)s, %(token_id)s, NULL, %(now)s, %(expires_at)s);

-- name: holder
-- The active user behind a live session, with the token's id and the session's organization (an expired session,
-- a revoked or expired token, a suspended user: none).
SELECT u.id, u.username, u.email, '' AS role, u.is_system, u.suspended, u.created_at, u.updated_at,
       u.site_owner, NULL::uuid AS organization_id, t.id AS token_id, t.last_used_at AS token_last_used_at,
       s.organization_id AS session_organization_id, s.expires_at AS session_expires_at
FROM dashboard_sessions s
JOIN api_tokens t ON t.id = s.token_id
JOIN users u ON u.id = t.user_id
WHERE s.id_hash = %(id_hash)s
  AND s.expires_at > %(now)s
  AND t.revoked_at IS NULL
  AND (t.expires_at IS NULL OR t.expires_at > %(now)s)
  AND NOT u.suspended AND NOT u.is_system;

-- name: set_organization
-- Which organization a session's pages act in from now on.
UPDATE dashboard_sessions SET organization_id = %(organization_id)s WHERE id_hash = %(id_hash)s;

-- name: delete
-- Ends a session (logout); no row when there was none.
DELETE FROM dashboard_sessions WHERE id_hash = %(id_hash)s RETURNING token_id;

-- name: prune
-- Drops the sessions that have expired (done at each login, so the table holds about the live sessions).
DELETE FROM dashboard_sessions WHERE expires_at <= %(now)s;
