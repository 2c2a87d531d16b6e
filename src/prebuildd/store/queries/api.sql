-- Queries of the HTTP API (users, templates, workspaces, jobs). Builds are read with `build_*` column names in
-- every query that returns one, so one converter serves workspaces (their latest build) and build lists.

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
-- The newest jobs of an organization, of one status when given, as operators list them.
SELECT id, type, provisioner, job_status, error, failure_class, priority, tags, created_at, started_at,
       completed_at, worker_id, initiator_id
FROM provisioner_jobs
WHERE organization_id = %(organization_id)s AND (%(status)s::text IS NULL OR job_status = %(status)s::text)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: queue_depth
-- How many jobs of an organization are pending and running, and when the oldest pending one was queued.
SELECT count(*) FILTER (WHERE job_status = 'pending') AS pending,
       count(*) FILTER (WHERE job_status = 'running') AS running,
       min(created_at) FILTER (WHERE job_status = 'pending') AS oldest_pending_at
FROM provisioner_jobs
WHERE organization_id = %(organization_id)s AND job_status IN ('pending', 'running');

-- name: job_by_id
-- One job as operators see it, with its organization (the route checks the caller's).
SELECT id, type, provisioner, job_status, error, failure_class, priority, tags, created_at, started_at,
       completed_at, worker_id, initiator_id, organization_id
FROM provisioner_jobs
WHERE id = %(id)s;
