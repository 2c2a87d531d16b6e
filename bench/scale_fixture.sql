-- Bulk data for bench/reconcile_scale.py: %(templates)s templates with %(presets_per_template)s pool presets each,
-- %(prebuilds)s ready prebuilds per preset, and failure history (failed prebuilds on some presets, deleted
-- prebuilds on all). Parameters are psycopg named parameters; timestamps come from %(now)s and %(earlier)s.
WITH t AS (
    INSERT INTO templates (id, organization_id, name, created_at, updated_at)
    SELECT gen_random_uuid(), %(org)s, 'tpl-' || i, %(now)s, %(now)s FROM generate_series(1, %(templates)s) i
    RETURNING id
), j AS (
    INSERT INTO provisioner_jobs (id, organization_id, type, provisioner, created_at, updated_at, started_at, completed_at, input)
    SELECT gen_random_uuid(), %(org)s, 'template_version_import', 'echo', %(now)s, %(now)s, %(now)s, %(now)s,
           jsonb_build_object('template_id', t.id)
    FROM t
    RETURNING id, input
)
INSERT INTO template_versions (id, template_id, organization_id, name, provisioner, manifest, source, source_hash,
                               job_id, created_at, updated_at)
SELECT gen_random_uuid(), (j.input->>'template_id')::uuid, %(org)s, 'v1', 'echo', 'provisioner = "echo"', %(source)s,
       'bench', j.id, %(now)s, %(now)s
FROM j;

UPDATE templates t SET active_version_id = v.id FROM template_versions v WHERE v.template_id = t.id;

INSERT INTO template_version_presets (id, template_version_id, name, desired_instances, created_at, updated_at)
SELECT gen_random_uuid(), v.id, 'preset-' || i, %(prebuilds)s, %(now)s, %(now)s
FROM template_versions v, generate_series(1, %(presets_per_template)s) i;

-- Ready prebuilds, failed prebuilds (every 10th preset has 2) and deleted ones (1 per preset, 2 builds each).
CREATE TEMP TABLE bench_ws ON COMMIT DROP AS
SELECT gen_random_uuid() AS id, p.id AS preset_id, v.id AS version_id, v.template_id, kind, n,
       gen_random_uuid() AS job1, gen_random_uuid() AS job2
FROM template_version_presets p
JOIN template_versions v ON v.id = p.template_version_id
CROSS JOIN LATERAL (
    SELECT 'ready' AS kind, n FROM generate_series(1, %(prebuilds)s) n
    UNION ALL SELECT 'failed', n FROM generate_series(1, 2) n WHERE abs(hashtext(p.id::text)) %% 10 = 0
    UNION ALL SELECT 'deleted', 1
) k;

INSERT INTO workspaces (id, organization_id, owner_id, template_id, name, created_at, updated_at, deleted,
                        latest_build_number, pool_preset_id)
SELECT id, %(org)s, %(prebuilds_user)s, template_id, 'prebuild-' || replace(id::text, '-', ''), %(now)s, %(now)s,
       kind = 'deleted', CASE WHEN kind = 'deleted' THEN 2 ELSE 1 END, preset_id
FROM bench_ws;

INSERT INTO provisioner_jobs (id, organization_id, type, provisioner, priority, created_at, updated_at, started_at,
                              completed_at, error, failure_class, input)
SELECT job1, %(org)s, 'workspace_build', 'echo', 10, %(now)s, %(now)s, %(now)s, %(now)s,
       CASE WHEN kind = 'failed' THEN 'scripted failure' END, CASE WHEN kind = 'failed' THEN 'build' END,
       jsonb_build_object('workspace_id', id)
FROM bench_ws
UNION ALL
SELECT job2, %(org)s, 'workspace_build', 'echo', 10, %(now)s, %(now)s, %(now)s, %(now)s, NULL, NULL,
       jsonb_build_object('workspace_id', id)
FROM bench_ws WHERE kind = 'deleted';

INSERT INTO workspace_builds (id, workspace_id, build_number, transition, template_version_id, preset_id,
                              initiator_id, reason, job_id, created_at, updated_at)
SELECT gen_random_uuid(), id, 1, 'start', version_id, preset_id, %(prebuilds_user)s, 'prebuild', job1,
       CASE WHEN kind = 'failed' THEN %(earlier)s ELSE %(now)s END, %(now)s
FROM bench_ws
UNION ALL
SELECT gen_random_uuid(), id, 2, 'delete', version_id, preset_id, %(prebuilds_user)s, 'prebuild', job2, %(now)s, %(now)s
FROM bench_ws WHERE kind = 'deleted';

ANALYZE;
