-- Which pool a prebuild belongs to, on the workspace row: set when the reconciler creates it, cleared by the
-- claim that hands it over. Claims and the reconciler's re-count then read only the live pool through an index,
-- instead of every build the preset ever had (which grows with each recycled or claimed prebuild).
ALTER TABLE workspaces ADD COLUMN pool_preset_id uuid;

UPDATE workspaces w SET pool_preset_id = b.preset_id
FROM workspace_builds b
WHERE b.workspace_id = w.id AND b.build_number = 1 AND b.preset_id IS NOT NULL
  AND w.owner_id = '00000000-0000-4000-8000-0000000b01d0' AND NOT w.deleted;

CREATE INDEX workspaces_pool ON workspaces (pool_preset_id, created_at)
    WHERE pool_preset_id IS NOT NULL AND NOT deleted;
