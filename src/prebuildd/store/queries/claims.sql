-- name: context
-- Everything a creation needs to decide whether it can claim, in one round trip: the template, its active
-- version's manifest, the pool presets of that version, and whether the owner already has a workspace so named.
SELECT t.id, t.name, t.organization_id, (SELECT o.name FROM organizations o WHERE o.id = t.organization_id)
       AS organization_name, t.deleted, t.active_version_id, v.manifest,
       coalesce((SELECT json_agg(json_build_object('id', p.id, 'name', p.name, 'parameters', p.parameters))
                 FROM template_version_presets p
                 WHERE p.template_version_id = t.active_version_id AND p.desired_instances IS NOT NULL),
                '[]'::json) AS presets,
       EXISTS (SELECT 1 FROM workspaces w WHERE w.owner_id = %(owner_id)s AND lower(w.name) = lower(%(name)s)
               AND NOT w.deleted) AS name_taken
FROM templates t
LEFT JOIN template_versions v ON v.id = t.active_version_id
WHERE t.id = %(template_id)s;

-- name: creation_target
-- The live template a creation names (case-insensitively, with its active version's name) and the id of the
-- preset it names in that version, in one round trip.
SELECT t.id, t.organization_id, t.name, t.display_name, t.description, t.active_version_id,
       v.name AS active_version, t.deprecated_at, t.deprecation_message, t.created_at, t.updated_at,
       (SELECT p.id FROM template_version_presets p
        WHERE p.template_version_id = t.active_version_id AND lower(p.name) = lower(%(preset)s::text)) AS preset_id
FROM templates t LEFT JOIN template_versions v ON v.id = t.active_version_id
WHERE t.organization_id = %(organization_id)s AND lower(t.name) = lower(%(name)s) AND NOT t.deleted;

-- name: claim_batch
-- The claim statement, for K requests of one preset (K = 1 for a claim alone; coalesced claims share one): the K
-- oldest eligible prebuilds, the i-th oldest to the i-th request, each with its own demand record (with the
-- claim's latency), time to ready, event and agent notification, in one round trip. Eligible: owned by the prebuilds user, latest build a
-- successful start on the template's active version, template neither deleted nor deprecated, every agent
-- ready, not expired (older than its ttl). SKIP LOCKED passes over a prebuild a delete is working on. Fewer
-- eligible prebuilds than requests: the first requests get one, the others no row (they build cold). Any error
-- fails the whole statement; the caller then claims for each request alone.
WITH request AS (
    SELECT r.owner_id, r.name, r.ord, r.waited_ms
    FROM unnest(%(owner_ids)s::uuid[], %(names)s::text[], %(waited_ms)s::float8[])
         WITH ORDINALITY AS r(owner_id, name, waited_ms, ord)
), candidate AS (
    SELECT w.id, p.name AS preset_name, w.created_at AS prebuild_created_at,
           greatest(j.completed_at, (SELECT max(a.ready_at) FROM workspace_agents a WHERE a.workspace_id = w.id))
               AS ready_at
    FROM workspaces w
    JOIN workspace_builds b ON b.workspace_id = w.id AND b.build_number = w.latest_build_number
    JOIN provisioner_jobs j ON j.id = b.job_id
    JOIN templates t ON t.id = w.template_id
    JOIN template_version_presets p ON p.id = b.preset_id
    WHERE w.pool_preset_id = %(preset_id)s AND w.owner_id = %(prebuilds_user_id)s AND NOT w.deleted
      AND b.preset_id = %(preset_id)s AND b.transition = 'start' AND j.job_status = 'succeeded'
      AND t.active_version_id = b.template_version_id AND NOT t.deleted AND t.deprecated_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM workspace_agents a WHERE a.workspace_id = w.id AND a.lifecycle <> 'ready')
      AND (p.last_invalidated_at IS NULL OR w.created_at >= p.last_invalidated_at)
      AND (p.ttl_seconds = 0 OR w.created_at >= %(now)s::timestamptz - make_interval(secs => p.ttl_seconds))
    ORDER BY w.created_at
    LIMIT cardinality(%(names)s::text[])
    FOR UPDATE OF w SKIP LOCKED
), numbered AS (
    SELECT c.*, row_number() OVER (ORDER BY c.prebuild_created_at, c.id) AS ord FROM candidate c
), claimed AS (
    UPDATE workspaces w
    SET owner_id = r.owner_id, name = r.name, claimed_at = %(now)s, updated_at = %(now)s, pool_preset_id = NULL
    FROM numbered n JOIN request r ON r.ord = n.ord
    WHERE w.id = n.id
    RETURNING w.id, w.name, w.owner_id, w.created_at, w.latest_build_number, w.organization_id, w.template_id,
              n.ord, n.preset_name, n.prebuild_created_at, n.ready_at
), demand AS (
    -- The claim's latency: its wait before this statement plus this statement's own time (durations on one
    -- clock each, so no skew between the server's and the database's clocks).
    INSERT INTO preset_demand (template_id, preset_name, kind, at, latency_ms)
    SELECT c.template_id, c.preset_name, 'claim', %(now)s,
           r.waited_ms + extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000
    FROM claimed c JOIN request r ON r.ord = c.ord
), ready_time AS (
    INSERT INTO prebuild_ready_times (workspace_id, template_id, preset_name, created_at, ready_at)
    SELECT c.id, c.template_id, c.preset_name, c.prebuild_created_at, c.ready_at FROM claimed c
    WHERE c.ready_at IS NOT NULL
    ON CONFLICT (workspace_id) DO NOTHING
), event AS (
    INSERT INTO events (created_at, kind, organization_id, template_id, preset_id, workspace_id, user_id, message)
    SELECT %(now)s, 'claim.succeeded', c.organization_id, c.template_id, %(preset_id)s, c.id, c.owner_id,
           'claimed ' || c.name || ' (prebuilt ' || to_char(c.created_at AT TIME ZONE 'UTC',
                                                          'YYYY-MM-DD HH24:MI:SS') || 'Z)'
    FROM claimed c
)
SELECT c.id, c.ord, pg_notify('prebuildd_workspace_claimed', c.id::text)
FROM claimed c;

-- name: insert_event
-- One event row (claim.missed and other claim events the claim statement does not write); a claim.missed is also
-- a demand record for the autoscaler (misses are demand too), written by the same statement.
WITH demand AS (
    INSERT INTO preset_demand (template_id, preset_name, kind, at)
    SELECT %(template_id)s::uuid, p.name, 'miss', %(now)s::timestamptz
    FROM template_version_presets p
    WHERE p.id = %(preset_id)s::uuid AND %(kind)s::text = 'claim.missed'
)
INSERT INTO events (created_at, kind, organization_id, template_id, preset_id, workspace_id, user_id, message, data)
VALUES (%(now)s, %(kind)s, %(organization_id)s, %(template_id)s, %(preset_id)s, %(workspace_id)s, %(user_id)s,
        %(message)s, %(data)s);

-- name: hit_rates
-- Claims and misses per preset over the last hour and day.
SELECT preset_id,
       count(*) FILTER (WHERE kind = 'claim.succeeded' AND created_at >= %(hour_ago)s) AS claims_hour,
       count(*) FILTER (WHERE kind = 'claim.missed' AND created_at >= %(hour_ago)s) AS misses_hour,
       count(*) FILTER (WHERE kind = 'claim.succeeded') AS claims_day,
       count(*) FILTER (WHERE kind = 'claim.missed') AS misses_day
FROM events
WHERE kind IN ('claim.succeeded', 'claim.missed') AND created_at >= %(day_ago)s AND preset_id = ANY(%(preset_ids)s)
GROUP BY preset_id;

-- name: claim_build_labels
-- The organization, template and preset of a claim build's job (for the per-preset claim-build metrics).
SELECT o.name AS organization_name, t.name AS template_name, coalesce(p.name, '') AS preset_name
FROM workspace_builds b
JOIN workspaces w ON w.id = b.workspace_id
JOIN organizations o ON o.id = w.organization_id
JOIN templates t ON t.id = w.template_id
LEFT JOIN template_version_presets p ON p.id = b.preset_id
WHERE b.job_id = %(job_id)s;
