-- name: issue_token
-- A new token for a declared agent of a workspace (a start build): the agent starts over from `created`.
INSERT INTO workspace_agents (id, workspace_id, name, token_hash, lifecycle, lifecycle_changed_at, created_at)
VALUES (%(id)s, %(workspace_id)s, %(name)s, %(token_hash)s, 'created', %(now)s, %(now)s)
ON CONFLICT (workspace_id, name) DO UPDATE
SET token_hash = excluded.token_hash, lifecycle = 'created', lifecycle_changed_at = excluded.lifecycle_changed_at,
    ready_at = NULL;

-- name: by_token
-- Agent tokens stop working when their workspace is deleted.
SELECT a.id, a.name, a.lifecycle, a.workspace_id, w.name AS workspace_name, w.owner_id, u.username AS owner_name,
       w.claimed_at, w.created_at AS workspace_created_at, w.template_id
FROM workspace_agents a
JOIN workspaces w ON w.id = a.workspace_id AND NOT w.deleted
JOIN users u ON u.id = w.owner_id
WHERE a.token_hash = %(token_hash)s;

-- name: set_lifecycle
-- An agent reports its lifecycle; ready_at remembers when it was last ready.
UPDATE workspace_agents
SET lifecycle = %(lifecycle)s, lifecycle_changed_at = %(now)s,
    ready_at = CASE WHEN %(lifecycle)s = 'ready' THEN %(now)s ELSE ready_at END
WHERE id = %(id)s
RETURNING lifecycle, ready_at;

-- name: workspace_claim
-- Whether and by whom an agent's workspace was claimed: what the agent long-polls for.
SELECT w.claimed_at, w.name AS workspace_name, u.username AS owner_name, w.owner_id, w.deleted
FROM workspaces w JOIN users u ON u.id = w.owner_id
WHERE w.id = %(workspace_id)s;
