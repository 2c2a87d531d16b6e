-- The audit log: who did what, when, with which credential, on which object, and how it ended. No foreign keys:
-- an entry outlives the user, token, organization and object it names, so it keeps their names as they were.
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    actor_id uuid,
    actor_name text NOT NULL,
    token_id uuid,
    organization_id uuid,
    action text NOT NULL,
    object_type text NOT NULL DEFAULT '',
    object_id text,
    object_name text NOT NULL DEFAULT '',
    outcome text NOT NULL CHECK (outcome IN ('ok', 'denied', 'invalid', 'conflict', 'error')),
    error_code text,
    error_message text,
    detail jsonb NOT NULL DEFAULT '{}',
    request_id text,
    source_ip text
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_by_actor ON audit_log (lower(actor_name), id);
CREATE INDEX audit_log_by_action ON audit_log (action, id);
CREATE INDEX audit_log_by_organization ON audit_log (organization_id, id);
