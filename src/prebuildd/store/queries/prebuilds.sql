-- name: last_decisions
-- The newest reconcile decision recorded for each of the presets.
SELECT DISTINCT ON (preset_id) preset_id, created_at, message
FROM events
WHERE kind = 'reconcile.decision' AND preset_id = ANY(%(preset_ids)s)
ORDER BY preset_id, created_at DESC, id DESC;

-- name: presets_of_active_version
-- Presets of a template's active version (one when a preset name is given), by name, case-insensitively.
SELECT p.id, p.name, p.template_version_id, t.id AS template_id, t.name AS template_name
FROM templates t
JOIN template_version_presets p ON p.template_version_id = t.active_version_id
WHERE t.organization_id = %(organization_id)s AND lower(t.name) = lower(%(template)s) AND NOT t.deleted
  AND (%(preset)s::text IS NULL OR lower(p.name) = lower(%(preset)s::text))
ORDER BY p.name;

-- name: invalidate
-- Marks every prebuild of the presets as expired (created before now).
UPDATE template_version_presets SET last_invalidated_at = %(now)s, updated_at = %(now)s
WHERE id = ANY(%(preset_ids)s);

-- name: set_pool
-- Changes a preset's pool settings; returns them.
UPDATE template_version_presets
SET desired_instances = %(desired_instances)s, ttl_seconds = %(ttl_seconds)s,
    scheduling_timezone = %(timezone)s, autoscale = %(autoscale)s, target_expression = %(target_expression)s,
    updated_at = %(now)s
WHERE id = %(preset_id)s
RETURNING name, desired_instances, ttl_seconds, scheduling_timezone AS timezone, autoscale, target_expression;

-- name: preset_pool
-- A preset's pool settings (the ones set_pool changes).
SELECT name, desired_instances, ttl_seconds, scheduling_timezone AS timezone, autoscale, target_expression
FROM template_version_presets WHERE id = %(preset_id)s;

-- name: insert_schedule
-- One schedule of a preset, at its position.
INSERT INTO template_version_preset_schedules (preset_id, position, cron, desired_instances)
VALUES (%(preset_id)s, %(position)s, %(cron)s, %(desired_instances)s);

-- name: delete_schedules
-- Removes a preset's schedules (before writing its new ones).
DELETE FROM template_version_preset_schedules WHERE preset_id = %(preset_id)s;

-- name: preset_schedules
-- A preset's schedules in order, as (cron, instances).
SELECT cron, desired_instances AS instances FROM template_version_preset_schedules
WHERE preset_id = %(preset_id)s ORDER BY position;

-- name: reset_failures
-- Earlier failures of the presets stop counting: their status is healthy again.
UPDATE template_version_presets
SET failures_reset_at = %(now)s, prebuild_status = 'healthy', prebuild_status_reason = NULL,
    prebuild_last_error = NULL, prebuild_status_changed_at = %(now)s, updated_at = %(now)s
WHERE id = ANY(%(preset_ids)s);

-- name: clear_trackers
-- Forgets the transient failure counters of the presets.
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
-- The presets' events, newest first.
SELECT created_at, kind, message, data FROM events
WHERE preset_id = ANY(%(preset_ids)s)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: set_paused
-- Pauses or resumes reconciliation (the one settings row); returns the new setting.
UPDATE settings SET reconciliation_paused = %(paused)s, updated_at = %(now)s, updated_by = %(user_id)s
RETURNING reconciliation_paused, updated_at;

-- name: claim_build_counts
-- The claim builds of a preset's claimed prebuilds since a time (explain): counts by outcome, durations from the
-- claim (the job's creation) to the end, and the newest failure's error.
SELECT count(*) AS total,
       count(*) FILTER (WHERE j.job_status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE j.job_status = 'failed') AS failed,
       count(*) FILTER (WHERE j.completed_at IS NULL) AS in_progress,
       avg(extract(epoch FROM j.completed_at - j.created_at)) FILTER (WHERE j.completed_at IS NOT NULL)
           AS avg_seconds,
       max(extract(epoch FROM j.completed_at - j.created_at)) AS max_seconds,
       (array_agg(j.error ORDER BY j.completed_at DESC) FILTER (WHERE j.job_status = 'failed'))[1] AS last_error
FROM workspace_builds b
JOIN provisioner_jobs j ON j.id = b.job_id
WHERE b.preset_id = %(preset_id)s AND b.created_at >= %(since)s AND b.reason = 'claim';
