-- name: template_by_name
SELECT * FROM templates
WHERE organization_id = %(organization_id)s AND lower(name) = lower(%(name)s) AND NOT deleted;

-- name: template_by_id
SELECT * FROM templates WHERE id = %(id)s;

-- name: insert_template
INSERT INTO templates (id, organization_id, name, display_name, description, created_by, created_at, updated_at)
VALUES (%(id)s, %(organization_id)s, %(name)s, %(display_name)s, %(description)s, %(created_by)s, %(now)s, %(now)s)
RETURNING *;

-- name: update_template_meta
UPDATE templates SET display_name = %(display_name)s, description = %(description)s, updated_at = %(now)s
WHERE id = %(id)s;

-- name: set_active_version
UPDATE templates SET active_version_id = %(version_id)s, updated_at = %(now)s
WHERE id = %(template_id)s
RETURNING *;

-- name: next_version_number
SELECT count(*) + 1 AS n FROM template_versions WHERE template_id = %(template_id)s;

-- name: insert_version
INSERT INTO template_versions (id, template_id, organization_id, name, message, provisioner, manifest, source,
                               source_hash, tags, agents, warnings, activate_on_import, job_id, created_by,
                               created_at, updated_at)
VALUES (%(id)s, %(template_id)s, %(organization_id)s, %(name)s, %(message)s, %(provisioner)s, %(manifest)s,
        %(source)s, %(source_hash)s, %(tags)s, %(agents)s, %(warnings)s, %(activate_on_import)s, %(job_id)s,
        %(created_by)s, %(now)s, %(now)s)
RETURNING id, template_id, organization_id, name, provisioner, job_id, created_at;

-- name: version_with_job
SELECT v.id, v.template_id, v.organization_id, v.name, v.provisioner, v.manifest, v.tags, v.agents, v.warnings,
       v.activate_on_import, v.job_id, v.created_at, j.job_status AS import_status, j.error AS import_error
FROM template_versions v
JOIN provisioner_jobs j ON j.id = v.job_id
WHERE v.id = %(id)s;

-- name: version_by_job
SELECT id, template_id, organization_id, name, provisioner, manifest, activate_on_import
FROM template_versions WHERE job_id = %(job_id)s;

-- name: latest_version_import_status
SELECT j.job_status, j.error, v.name
FROM template_versions v JOIN provisioner_jobs j ON j.id = v.job_id
WHERE v.template_id = %(template_id)s
ORDER BY v.created_at DESC
LIMIT 1;

-- name: set_version_warnings
UPDATE template_versions SET warnings = %(warnings)s, updated_at = %(now)s WHERE id = %(id)s;

-- name: insert_parameter
INSERT INTO template_version_parameters (template_version_id, name, position, spec)
VALUES (%(version_id)s, %(name)s, %(position)s, %(spec)s);

-- name: version_parameters
SELECT name, spec FROM template_version_parameters
WHERE template_version_id = %(version_id)s
ORDER BY position;

-- name: insert_preset
INSERT INTO template_version_presets (id, template_version_id, name, description, parameters, desired_instances,
                                      ttl_seconds, scheduling_timezone, created_at, updated_at)
VALUES (%(id)s, %(version_id)s, %(name)s, %(description)s, %(parameters)s, %(desired_instances)s,
        %(ttl_seconds)s, %(timezone)s, %(now)s, %(now)s);

-- name: insert_preset_schedule
INSERT INTO template_version_preset_schedules (preset_id, position, cron, desired_instances)
VALUES (%(preset_id)s, %(position)s, %(cron)s, %(desired_instances)s);

-- name: preset_by_id
SELECT * FROM template_version_presets WHERE id = %(id)s;

-- name: preset_by_name
SELECT * FROM template_version_presets
WHERE template_version_id = %(version_id)s AND lower(name) = lower(%(name)s);

-- name: version_presets
SELECT * FROM template_version_presets WHERE template_version_id = %(version_id)s ORDER BY name;

-- name: version_source
SELECT id, manifest, source, source_hash FROM template_versions WHERE id = %(id)s;
