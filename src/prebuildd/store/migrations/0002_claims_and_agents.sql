-- Claims and readiness. Each workspace row carries the number of its latest build, written by the builder under
-- the row lock: a claim that locks a prebuild re-checks that number, so a delete (or any build) that slipped in
-- after the claim's snapshot makes the claim skip that prebuild instead of both winning.

ALTER TABLE workspaces ADD COLUMN latest_build_number integer NOT NULL DEFAULT 0;
UPDATE workspaces w
SET latest_build_number = (SELECT max(build_number) FROM workspace_builds b WHERE b.workspace_id = w.id)
WHERE EXISTS (SELECT 1 FROM workspace_builds b WHERE b.workspace_id = w.id);

-- Agents declared by a template; a workspace with agents is ready when all of them are.
CREATE TABLE workspace_agents (
    id uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name text NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    lifecycle text NOT NULL DEFAULT 'created'
        CHECK (lifecycle IN ('created', 'starting', 'ready', 'start_error', 'off')),
    lifecycle_changed_at timestamptz NOT NULL,
    ready_at timestamptz,
    created_at timestamptz NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE INDEX events_claims ON events (preset_id, created_at) WHERE kind IN ('claim.succeeded', 'claim.missed');
