-- Templates, their versions, parameters and presets. Queries returning a template select the columns of
-- ``store.templates.Template`` in order; those returning a version, those of ``TemplateVersion``.

-- name: template_by_name
-- A live template by name, every column (tests and benches read it).
SELECT * FROM templates
WHERE organization_id = %(organization_id)s AND lower(name) = lower(%(name)s) AND NOT deleted;

-- name: template_by_id
-- A template by id, deleted or not.
SELECT * FROM templates WHERE id = %(id)s;

-- name: insert_template
-- Creates a template on its first push (it has no active version yet).
INSERT INTO templates (id, organization_id, name, display_name, description, created_by, created_at, updated_at)
VALUES (%(id)s, %(organization_id)s, %(name)s, %(display_name)s, %(description)s, %(created_by)s, %(now)s, %(now)s)
RETURNING id, organization_id, name, display_name, description, active_version_id, NULL::text AS active_version,
          deprecated_at, deprecation_message, created_at, updated_at;

-- name: update_template_meta
-- A push refreshes the template's display name and description.
UPDATE templates SET display_name = %(display_name)s, description = %(description)s, updated_at = %(now)s
WHERE id = %(id)s;

-- name: set_active_version
-- Makes a version the active one (the reconciler then rebuilds the pools).
UPDATE templates SET active_version_id = %(version_id)s, updated_at = %(now)s
WHERE id = %(template_id)s
RETURNING *;

-- name: next_version_number
-- The number of the next version of a template (v1, v2, ...).
SELECT count(*) + 1 AS n FROM template_versions WHERE template_id = %(template_id)s;

-- name: insert_version
-- Creates a version with its archive; its import job decides whether it becomes usable.
INSERT INTO template_versions (id, template_id, organization_id, name, message, provisioner, manifest, source,
                               source_hash, tags, agents, warnings, activate_on_import, job_id, created_by,
                               created_at, updated_at)
VALUES (%(id)s, %(template_id)s, %(organization_id)s, %(name)s, %(message)s, %(provisioner)s, %(manifest)s,
        %(source)s, %(source_hash)s, %(tags)s, %(agents)s, %(warnings)s, %(activate_on_import)s, %(job_id)s,
        %(created_by)s, %(now)s, %(now)s)
RETURNING id, template_id, organization_id, name, provisioner, job_id, created_at;

-- name: version_with_job
-- A version with the status and error of its import job.
SELECT v.id, v.template_id, v.organization_id, v.name, v.provisioner, v.manifest, v.tags, v.agents, v.warnings,
       v.activate_on_import, v.job_id, v.created_at, j.job_status AS import_status, j.error AS import_error
FROM template_versions v
JOIN provisioner_jobs j ON j.id = v.job_id
WHERE v.id = %(id)s;

-- name: version_by_job
-- The version an import job imports.
SELECT id, template_id, organization_id, name, provisioner, manifest, activate_on_import
FROM template_versions WHERE job_id = %(job_id)s;

-- name: latest_version_import_status
-- The import status of a template's newest version.
SELECT j.job_status, j.error, v.name
FROM template_versions v JOIN provisioner_jobs j ON j.id = v.job_id
WHERE v.template_id = %(template_id)s
ORDER BY v.created_at DESC
LIMIT 1;

-- name: set_version_warnings
-- The warnings of a version once its import has finished.
UPDATE template_versions SET warnings = %(warnings)s, updated_at = %(now)s WHERE id = %(id)s;

-- name: insert_parameter
-- A parameter declared by a version, in manifest order.
INSERT INTO template_version_parameters (template_version_id, name, position, spec)
VALUES (%(version_id)s, %(name)s, %(position)s, %(spec)s);

-- name: version_parameters
-- A version's declared parameters, in manifest order.
SELECT name, spec FROM template_version_parameters
WHERE template_version_id = %(version_id)s
ORDER BY position;

-- name: insert_preset
-- A preset of a version, with its pool settings.
INSERT INTO template_version_presets (id, template_version_id, name, description, parameters, desired_instances,
                                      ttl_seconds, scheduling_timezone, autoscale, target_expression,
                                      created_at, updated_at)
VALUES (%(id)s, %(version_id)s, %(name)s, %(description)s, %(parameters)s, %(desired_instances)s,
        %(ttl_seconds)s, %(timezone)s, %(autoscale)s, %(target_expression)s, %(now)s, %(now)s);

-- name: insert_preset_schedule
-- One entry of a preset's schedule.
INSERT INTO template_version_preset_schedules (preset_id, position, cron, desired_instances)
VALUES (%(preset_id)s, %(position)s, %(cron)s, %(desired_instances)s);

-- name: preset_by_id
-- A preset by id.
SELECT * FROM template_version_presets WHERE id = %(id)s;

-- name: preset_by_name
-- A preset of a version by name, case-insensitively.
SELECT * FROM template_version_presets
WHERE template_version_id = %(version_id)s AND lower(name) = lower(%(name)s);

-- name: version_presets
-- A version's presets, by name.
SELECT * FROM template_version_presets WHERE template_version_id = %(version_id)s ORDER BY name;

-- name: live_templates
-- An organization's live templates with the name of their active version, by name.
SELECT t.id, t.organization_id, t.name, t.display_name, t.description, t.active_version_id,
       v.name AS active_version, t.deprecated_at, t.deprecation_message, t.created_at, t.updated_at
FROM templates t LEFT JOIN template_versions v ON v.id = t.active_version_id
WHERE t.organization_id = %(organization_id)s AND NOT t.deleted
ORDER BY t.name;

-- name: live_template
-- A live template by name, case-insensitively, with the name of its active version.
SELECT t.id, t.organization_id, t.name, t.display_name, t.description, t.active_version_id,
       v.name AS active_version, t.deprecated_at, t.deprecation_message, t.created_at, t.updated_at
FROM templates t LEFT JOIN template_versions v ON v.id = t.active_version_id
WHERE t.organization_id = %(organization_id)s AND lower(t.name) = lower(%(name)s) AND NOT t.deleted;

-- name: lock_template
-- Taken before a delete, so that no workspace is created from the template meanwhile.
SELECT id FROM templates WHERE id = %(id)s AND NOT deleted FOR UPDATE;

-- name: set_deprecation
-- Deprecates a template (or lifts it: both null).
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
-- Marks a template deleted; its rows stay so that builds and logs remain readable.
UPDATE templates SET deleted = true, deleted_at = %(now)s, updated_at = %(now)s
WHERE id = %(id)s AND NOT deleted;

-- name: versions_of_template
-- A template's versions with their import status, newest first.
SELECT v.id, v.name, t.name AS template, v.message, v.provisioner, j.job_status AS import_status,
       j.error AS import_error, v.warnings, coalesce(t.active_version_id = v.id, false) AS active, v.created_at,
       v.job_id
FROM template_versions v
JOIN templates t ON t.id = v.template_id
JOIN provisioner_jobs j ON j.id = v.job_id
WHERE v.template_id = %(template_id)s
ORDER BY v.created_at DESC, v.name DESC;

-- name: version_by_name
-- One version of a template by name, case-insensitively, with its import status.
SELECT v.id, v.name, t.name AS template, v.message, v.provisioner, j.job_status AS import_status,
       j.error AS import_error, v.warnings, coalesce(t.active_version_id = v.id, false) AS active, v.created_at,
       v.job_id
FROM template_versions v
JOIN templates t ON t.id = v.template_id
JOIN provisioner_jobs j ON j.id = v.job_id
WHERE v.template_id = %(template_id)s AND lower(v.name) = lower(%(name)s);

-- name: presets_of_version
-- A version's presets with their pool settings, schedules and pool status, by name.
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
