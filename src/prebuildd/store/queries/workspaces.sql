-- name: insert_workspace
-- A new workspace (a prebuild joins its preset's pool through pool_preset_id).
INSERT INTO workspaces (id, organization_id, owner_id, template_id, name, created_at, updated_at, pool_preset_id)
VALUES (%(id)s, %(organization_id)s, %(owner_id)s, %(template_id)s, %(name)s, %(now)s, %(now)s,
        %(pool_preset_id)s)
RETURNING *;

-- name: lock_workspace
-- A workspace locked for the builder's transaction: one build at a time per workspace.
SELECT * FROM workspaces WHERE id = %(id)s FOR UPDATE;

-- name: workspace_by_id
-- One workspace row, deleted or not.
SELECT * FROM workspaces WHERE id = %(id)s;

-- name: latest_build
-- A workspace's latest build with its job: what the next build continues from.
SELECT b.*, j.job_status, j.error AS job_error, j.failure_class, j.started_at AS job_started_at,
       j.completed_at AS job_completed_at
FROM workspace_builds b JOIN provisioner_jobs j ON j.id = b.job_id
WHERE b.workspace_id = %(workspace_id)s
ORDER BY b.build_number DESC
LIMIT 1;

-- name: infrastructure_ever_ran
-- Whether any build of the workspace reached a provisioner (a delete has something to undo).
SELECT EXISTS (
    SELECT 1 FROM workspace_builds b JOIN provisioner_jobs j ON j.id = b.job_id
    WHERE b.workspace_id = %(workspace_id)s AND j.started_at IS NOT NULL
) AS ran;

-- name: insert_build
-- Also moves the workspace's latest_build_number, which claims re-check under their row lock.
WITH build AS (
    INSERT INTO workspace_builds (id, workspace_id, build_number, transition, template_version_id, preset_id,
                                  parameters, state, initiator_id, reason, job_id, created_at, updated_at)
    VALUES (%(id)s, %(workspace_id)s, %(build_number)s, %(transition)s, %(version_id)s, %(preset_id)s,
            %(parameters)s, %(state)s, %(initiator_id)s, %(reason)s, %(job_id)s, %(now)s, %(now)s)
    RETURNING id, build_number, workspace_id
), moved AS (
    UPDATE workspaces w SET latest_build_number = build.build_number, updated_at = %(now)s
    FROM build WHERE w.id = build.workspace_id
)
SELECT id, build_number FROM build;

-- name: mark_deleted
-- Mark a workspace deleted once (an orphan delete, or a delete build that succeeded).
UPDATE workspaces SET deleted = true, deleted_at = %(now)s, updated_at = %(now)s
WHERE id = %(id)s AND NOT deleted;

-- name: finish_build
-- Store what a finished build produced: its state and outputs.
UPDATE workspace_builds SET state = %(state)s, outputs = %(outputs)s, updated_at = %(now)s
WHERE job_id = %(job_id)s
RETURNING workspace_id, transition, build_number;

-- name: keep_failed_state
-- Keep the state a failed build left behind, so that the next build can clean it up.
UPDATE workspace_builds SET state = %(state)s, updated_at = %(now)s WHERE job_id = %(job_id)s;
