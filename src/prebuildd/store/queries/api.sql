-- Queries of the HTTP API (users, templates, workspaces, jobs). Builds are read with `build_*` column names in
-- every query that returns one, so one converter serves workspaces (their latest build) and build lists.

-- name: users
SELECT * FROM users WHERE NOT is_system ORDER BY lower(username);

-- name: lock_active_owners
-- Taken before a role or suspension change, so that two concurrent changes cannot leave no active owner.
SELECT id FROM users WHERE role = 'owner' AND NOT suspended AND NOT is_system ORDER BY id FOR UPDATE;

-- name: active_owner_count
SELECT count(*) AS n FROM users WHERE role = 'owner' AND NOT suspended AND NOT is_system;

-- name: update_user
UPDATE users
SET role = coalesce(%(role)s::text, role), suspended = coalesce(%(suspended)s::boolean, suspended),
    updated_at = %(now)s
WHERE id = %(id)s AND NOT is_system
RETURNING *;

-- name: templates
SELECT t.*, v.name AS active_version
FROM templates t LEFT JOIN template_versions v ON v.id = t.active_version_id
WHERE t.organization_id = %(organization_id)s AND NOT t.deleted
ORDER BY t.name;

-- name: template_by_name
SELECT t.*, v.name AS active_version
FROM templates t LEFT JOIN template_versions v ON v.id = t.active_version_id
WHERE t.organization_id = %(organization_id)s AND lower(t.name) = lower(%(name)s) AND NOT t.deleted;

-- name: lock_template
SELECT id FROM templates WHERE id = %(id)s AND NOT deleted FOR UPDATE;

-- name: set_deprecation
UPDATE templates SET deprecated_at = %(deprecated_at)s, deprecation_message = %(message)s, updated_at = %(now)s
WHERE id = %(id)s;

-- name: user_workspaces_of_template
-- Live workspaces of real users (prebuilds excluded): a template with any cannot be deleted.
SELECT u.username, w.name, count(*) OVER () AS total
FROM workspaces w JOIN users u ON u.id = w.owner_id
WHERE w.template_id = %(template_id)s AND NOT w.deleted AND w.owner_id <> %(prebuilds_user_id)s
ORDER BY w.created_at
LIMIT 5;

-- name: mark_template_deleted
UPDATE templates SET deleted = true, deleted_at = %(now)s, updated_at = %(now)s
WHERE id = %(id)s AND NOT deleted;

-- name: versions_of_template
SELECT v.id, v.name, t.name AS template, v.message, v.provisioner, j.job_status AS import_status,
       j.error AS import_error, v.warnings, coalesce(t.active_version_id = v.id, false) AS active, v.created_at,
       v.job_id
FROM template_versions v
JOIN templates t ON t.id = v.template_id
JOIN provisioner_jobs j ON j.id = v.job_id
WHERE v.template_id = %(template_id)s
ORDER BY v.created_at DESC, v.name DESC;

-- name: version_by_name
SELECT v.id, v.name, t.name AS template, v.message, v.provisioner, j.job_status AS import_status,
       j.error AS import_error, v.warnings, coalesce(t.active_version_id = v.id, false) AS active, v.created_at,
       v.job_id
FROM template_versions v
JOIN templates t ON t.id = v.template_id
JOIN provisioner_jobs j ON j.id = v.job_id
WHERE v.template_id = %(template_id)s AND lower(v.name) = lower(%(name)s);

-- name: presets_of_version
SELECT p.id, p.name, p.description, v.name AS version, p.parameters, p.desired_instances, p.ttl_seconds,
       p.scheduling_timezone AS timezone, p.prebuild_status, p.prebuild_status_reason, p.prebuild_last_error,
       coalesce(
           (SELECT json_agg(json_build_object('cron', s.cron, 'instances', s.desired_instances) ORDER BY s.position)
            FROM template_version_preset_schedules s WHERE s.preset_id = p.id),
           '[]'::json
       ) AS schedules
FROM template_version_presets p JOIN template_versions v ON v.id = p.template_version_id
WHERE p.template_version_id = %(version_id)s
ORDER BY p.name;

-- name: workspaces
-- Live workspaces with their latest build; each filter applies when its parameter is not null.
SELECT w.id AS workspace_id, w.name, w.owner_id, u.username AS owner, w.template_id, t.name AS template,
       w.created_at, w.deleted,
       b.id AS build_id, b.build_number, b.transition, j.job_status AS build_status, j.error AS build_error,
       j.failure_class AS build_failure_class, v.name AS build_version, p.name AS build_preset,
       b.parameters AS build_parameters, b.outputs AS build_outputs, b.reason AS build_reason,
       b.created_at AS build_created_at, j.completed_at AS build_completed_at, b.job_id AS build_job_id
FROM workspaces w
JOIN users u ON u.id = w.owner_id
JOIN templates t ON t.id = w.template_id
LEFT JOIN workspace_builds b ON b.workspace_id = w.id AND b.build_number = w.latest_build_number
LEFT JOIN provisioner_jobs j ON j.id = b.job_id
LEFT JOIN template_versions v ON v.id = b.template_version_id
LEFT JOIN template_version_presets p ON p.id = b.preset_id
WHERE w.organization_id = %(organization_id)s AND NOT w.deleted
  AND (%(owner_id)s::uuid IS NULL OR w.owner_id = %(owner_id)s::uuid)
  AND (%(template)s::text IS NULL OR lower(t.name) = lower(%(template)s::text))
  AND (%(name)s::text IS NULL OR lower(w.name) = lower(%(name)s::text))
ORDER BY lower(u.username), lower(w.name), w.created_at;

-- name: workspace_by_id
-- Deleted workspaces too: after a delete build, its workspace still answers (with deleted = true).
SELECT w.id AS workspace_id, w.name, w.owner_id, u.username AS owner, w.template_id, t.name AS template,
       w.created_at, w.deleted, w.organization_id,
       b.id AS build_id, b.build_number, b.transition, j.job_status AS build_status, j.error AS build_error,
       j.failure_class AS build_failure_class, v.name AS build_version, p.name AS build_preset,
       b.parameters AS build_parameters, b.outputs AS build_outputs, b.reason AS build_reason,
       b.created_at AS build_created_at, j.completed_at AS build_completed_at, b.job_id AS build_job_id
FROM workspaces w
JOIN users u ON u.id = w.owner_id
JOIN templates t ON t.id = w.template_id
LEFT JOIN workspace_builds b ON b.workspace_id = w.id AND b.build_number = w.latest_build_number
LEFT JOIN provisioner_jobs j ON j.id = b.job_id
LEFT JOIN template_versions v ON v.id = b.template_version_id
LEFT JOIN template_version_presets p ON p.id = b.preset_id
WHERE w.id = %(id)s;

-- name: builds_of_workspace
-- Every build of a workspace, newest first, with its job's status.
SELECT b.workspace_id, b.id AS build_id, b.build_number, b.transition, j.job_status AS build_status,
       j.error AS build_error, j.failure_class AS build_failure_class, v.name AS build_version,
       p.name AS build_preset, b.parameters AS build_parameters, b.outputs AS build_outputs,
       b.reason AS build_reason, b.created_at AS build_created_at, j.completed_at AS build_completed_at,
       b.job_id AS build_job_id
FROM workspace_builds b
JOIN provisioner_jobs j ON j.id = b.job_id
JOIN template_versions v ON v.id = b.template_version_id
LEFT JOIN template_version_presets p ON p.id = b.preset_id
WHERE b.workspace_id = %(workspace_id)s
ORDER BY b.build_number DESC;

-- name: build_by_id
-- A build with what deciding who may read it needs: its workspace's owner and organization.
SELECT b.workspace_id, b.id AS build_id, b.build_number, b.transition, j.job_status AS build_status,
       j.error AS build_error, j.failure_class AS build_failure_class, v.name AS build_version,
       p.name AS build_preset, b.parameters AS build_parameters, b.outputs AS build_outputs,
       b.reason AS build_reason, b.created_at AS build_created_at, j.completed_at AS build_completed_at,
       b.job_id AS build_job_id, w.owner_id, w.organization_id
FROM workspace_builds b
JOIN workspaces w ON w.id = b.workspace_id
JOIN provisioner_jobs j ON j.id = b.job_id
JOIN template_versions v ON v.id = b.template_version_id
LEFT JOIN template_version_presets p ON p.id = b.preset_id
WHERE b.id = %(id)s;

-- name: job_status
-- The status of one job: a log follower ends its stream once the job is no longer active.
SELECT job_status FROM provisioner_jobs WHERE id = %(id)s;

-- name: jobs
SELECT id, type, provisioner, job_status, error, failure_class, priority, tags, created_at, started_at,
       completed_at, worker_id, initiator_id
FROM provisioner_jobs
WHERE organization_id = %(organization_id)s AND (%(status)s::text IS NULL OR job_status = %(status)s::text)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: job_by_id
SELECT id, type, provisioner, job_status, error, failure_class, priority, tags, created_at, started_at,
       completed_at, worker_id, initiator_id, organization_id
FROM provisioner_jobs
WHERE id = %(id)s;
