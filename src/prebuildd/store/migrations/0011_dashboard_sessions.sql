-- Dashboard sessions: a browser signed in with an API token. The cookie holds a random session id; only its
-- SHA-256 is stored (a leaked table opens no session). Each session hangs off the token it was opened with, so
-- revoking or expiring the token ends it at the next request (the session reader checks the token too), and
-- deleting the token deletes it. ``organization_id`` is the organization the pages act in (NULL: the user's only
-- or default one); an organization that goes away leaves the session in none.
CREATE TABLE dashboard_sessions (
    id_hash bytea PRIMARY KEY,
    token_id uuid NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    organization_id uuid REFERENCES organizations (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX dashboard_sessions_token ON dashboard_sessions (token_id);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_at);
