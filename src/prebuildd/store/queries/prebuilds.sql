-- name: last_decisions
SELECT DISTINCT ON (preset_id) preset_id, created_at, message
FROM events
WHERE kind = 'reconcile.decision' AND preset_id = ANY(%(preset_ids)s)
ORDER BY preset_id, created_at DESC, id DESC;

-- name: presets_of_active_version
SELECT p.id, p.name, p.template_version_id, t.id AS template_id, t.name AS template_name
FROM templates t
JOIN template_version_presets p ON p.template_version_id = t.active_version_id
WHERE t.organization_id = %(organization_id)s AND lower(t.name) = lower(%(template)s) AND NOT t.deleted
  AND (%(preset)s::text IS NULL OR lower(p.name) = lower(%(preset)s::text))
ORDER BY p.name;

-- name: invalidate
UPDATE template_version_presets SET last_invalidated_at = %(now)s, updated_at = %(now)s
WHERE id = ANY(%(preset_ids)s);

-- name: set_pool
UPDATE template_version_presets
SET desired_instances = %(desired_instances)s, ttl_seconds = %(ttl_seconds)s,
    scheduling_timezone = %(timezone)s, updated_at = %(now)s
WHERE id = %(preset_id)s
RETURNING *;

-- name: delete_schedules
DELETE FROM template_version_preset_schedules WHERE preset_id = %(preset_id)s;

-- name: preset_schedules
SELECT cron, desired_instances AS instances FROM template_version_preset_schedules
WHERE preset_id = %(preset_id)s ORDER BY position;

-- name: reset_failures
UPDATE template_version_presets
SET failures_reset_at = %(now)s, prebuild_status = 'healthy', prebuild_status_reason = NULL,
    prebuild_last_error = NULL, prebuild_status_changed_at = %(now)s, updated_at = %(now)s
WHERE id = ANY(%(preset_ids)s);

-- name: clear_trackers
DELETE FROM preset_failure_trackers WHERE preset_id = ANY(%(preset_ids)s);

-- name: failed_prebuilds
-- Failed prebuilds kept as evidence: the latest build is a start that failed.
SELECT lb.workspace_id, lb.workspace_name, lb.preset_id, p.name AS preset_name, t.name AS template_name,
       lb.job_id, lb.job_error AS error, lb.failure_class, lb.build_created_at, lb.job_completed_at
FROM workspace_latest_builds lb
JOIN templates t ON t.id = lb.template_id
LEFT JOIN template_version_presets p ON p.id = lb.preset_id
WHERE lb.owner_id = %(prebuilds_user_id)s AND lb.transition = 'start' AND lb.job_status = 'failed'
  AND t.organization_id = %(organization_id)s
  AND (%(template)s::text IS NULL OR lower(t.name) = lower(%(template)s::text))
  AND (%(preset)s::text IS NULL OR lower(p.name) = lower(%(preset)s::text))
ORDER BY lb.build_created_at;

-- name: preset_events
SELECT created_at, kind, message, data FROM events
WHERE preset_id = ANY(%(preset_ids)s)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: set_paused
UPDATE settings SET reconciliation_paused = %(paused)s, updated_at = %(now)s, updated_by = %(user_id)s
RETURNING reconciliation_paused, updated_at;
