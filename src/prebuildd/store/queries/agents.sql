-- name: issue_tokens
-- New tokens for the declared agents of a workspace (a start build), all in one statement: each agent starts over
-- from `created`.
INSERT INTO workspace_agents (id, workspace_id, name, token_hash, lifecycle, lifecycle_changed_at, created_at)
SELECT gen_random_uuid(), %(workspace_id)s, a.name, a.token_hash, 'created', %(now)s, %(now)s
FROM unnest(%(names)s::text[], %(token_hashes)s::bytea[]) AS a (name, token_hash)
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
-- What the agent reports; `ready` also stamps ready_at (time to ready is measured from it).
UPDATE workspace_agents
SET lifecycle = %(lifecycle)s, lifecycle_changed_at = %(now)s,
    ready_at = CASE WHEN %(lifecycle)s = 'ready' THEN %(now)s ELSE ready_at END
WHERE id = %(id)s
RETURNING lifecycle, ready_at;

-- name: workspace_claim
-- What the claim long poll of an agent reads: whether, when and by whom its workspace was claimed.
SELECT w.claimed_at, w.name AS workspace_name, u.username AS owner_name, w.owner_id, w.deleted
FROM workspaces w JOIN users u ON u.id = w.owner_id
WHERE w.id = %(workspace_id)s;
