-- workspace_latest_builds joins on workspaces.latest_build_number (kept by the builder) instead of a per-workspace
-- LATERAL sort: a plain join the planner can hash at any scale (the reconcile snapshot reads every prebuild).
CREATE OR REPLACE VIEW workspace_latest_builds AS
SELECT
    w.id AS workspace_id,
    w.organization_id,
    w.owner_id,
    w.template_id,
    w.name AS workspace_name,
    w.created_at AS workspace_created_at,
    b.id AS build_id,
    b.build_number,
    b.transition,
    b.template_version_id,
    b.preset_id,
    b.reason,
    b.created_at AS build_created_at,
    j.id AS job_id,
    j.job_status,
    j.error AS job_error,
    j.failure_class,
    j.started_at AS job_started_at,
    j.completed_at AS job_completed_at
FROM workspaces w
JOIN workspace_builds b ON b.workspace_id = w.id AND b.build_number = w.latest_build_number
JOIN provisioner_jobs j ON j.id = b.job_id
WHERE NOT w.deleted;

CREATE INDEX workspaces_owner ON workspaces (owner_id) WHERE NOT deleted;
