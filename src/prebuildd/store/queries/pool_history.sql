-- Pool-size history (``store.pool_history``): samples are inserted per cycle, read per preset, pruned by age.

-- name: record
-- Stores one cycle's samples of several pools in one statement (a replica that sampled the same instant wins).
INSERT INTO pool_size_samples (template_id, preset_name, at, desired, running, eligible)
SELECT k.template_id, k.preset_name, %(at)s, k.desired, k.running, k.eligible
FROM unnest(%(template_ids)s::uuid[], %(preset_names)s::text[], %(desired)s::int[], %(running)s::int[],
            %(eligible)s::int[]) AS k (template_id, preset_name, desired, running, eligible)
ON CONFLICT (template_id, preset_name, at) DO NOTHING;

-- name: recent
-- The samples of the given presets' pools since a time, oldest first, and the last one before it (the size in
-- effect when the window opens), each under the id of the preset it was asked for; only presets of the given
-- organizations when ``organization_ids`` is not NULL.
SELECT p.id AS preset_id, s.at, s.desired, s.running, s.eligible
FROM template_version_presets p
JOIN template_versions v ON v.id = p.template_version_id
JOIN templates t ON t.id = v.template_id
CROSS JOIN LATERAL (
    (SELECT b.at, b.desired, b.running, b.eligible FROM pool_size_samples b
     WHERE b.template_id = v.template_id AND b.preset_name = p.name AND b.at < %(since)s
     ORDER BY b.at DESC LIMIT 1)
    UNION ALL
    (SELECT w.at, w.desired, w.running, w.eligible FROM pool_size_samples w
     WHERE w.template_id = v.template_id AND w.preset_name = p.name AND w.at >= %(since)s)
) s
WHERE p.id = ANY(%(preset_ids)s::uuid[])
  AND (%(organization_ids)s::uuid[] IS NULL OR t.organization_id = ANY(%(organization_ids)s::uuid[]))
ORDER BY p.id, s.at;

-- name: prune
-- Deletes samples older than the retention.
DELETE FROM pool_size_samples WHERE at < %(before)s;

-- name: ready_times
-- A pool's times to ready (seconds, create to eligible) since a time, oldest first, if its preset belongs to one of
-- the given organizations (all when ``organization_ids`` is NULL).
SELECT extract(epoch FROM rt.ready_at - rt.created_at)::float8 AS ready_s
FROM template_version_presets p
JOIN template_versions v ON v.id = p.template_version_id
JOIN templates t ON t.id = v.template_id
JOIN prebuild_ready_times rt ON rt.template_id = v.template_id AND rt.preset_name = p.name
WHERE p.id = %(preset_id)s
  AND (%(organization_ids)s::uuid[] IS NULL OR t.organization_id = ANY(%(organization_ids)s::uuid[]))
  AND rt.ready_at >= %(since)s
ORDER BY rt.ready_at;

-- name: claim_latencies
-- A pool's claim latencies (milliseconds) since a time, oldest first, if its preset belongs to one of the given
-- organizations (all when ``organization_ids`` is NULL); claims recorded without a latency are left out.
SELECT d.latency_ms
FROM template_version_presets p
JOIN template_versions v ON v.id = p.template_version_id
JOIN templates t ON t.id = v.template_id
JOIN preset_demand d ON d.template_id = v.template_id AND d.preset_name = p.name
WHERE p.id = %(preset_id)s
  AND (%(organization_ids)s::uuid[] IS NULL OR t.organization_id = ANY(%(organization_ids)s::uuid[]))
  AND d.kind = 'claim' AND d.latency_ms IS NOT NULL AND d.at >= %(since)s
ORDER BY d.at;
